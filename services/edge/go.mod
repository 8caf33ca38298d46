module github.com/chatsys/chat/services/edge

go 1.26.8
