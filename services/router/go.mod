module github.com/chatsys/chat/services/router

go 1.26.8
