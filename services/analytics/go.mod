module github.com/chatsys/chat/services/analytics

go 1.26.8
