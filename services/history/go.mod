module github.com/chatsys/chat/services/history

go 1.26.8
