module github.com/chatsys/chat/cmd

go 1.26.8
