package main

import (
	"log"
	"net/http"
	"time"

	"github.com/gorilla/websocket"
)

// The baseline: a bare broadcast hub in the style of gorilla/websocket's
// chat example — no log, no validation, no auth. Every text frame any client
// sends goes to every client. Same upgrader buffer sizes as the example.

type hubClient struct {
	ws   *websocket.Conn
	send chan []byte
}

type bareHub struct {
	register, unregister chan *hubClient
	broadcast            chan []byte
	clients              map[*hubClient]bool
}

func (h *bareHub) run() {
	for {
		select {
		case c := <-h.register:
			h.clients[c] = true
		case c := <-h.unregister:
			if h.clients[c] {
				delete(h.clients, c)
				close(c.send)
			}
		case m := <-h.broadcast:
			for c := range h.clients {
				select {
				case c.send <- m:
				default:
					close(c.send)
					delete(h.clients, c)
				}
			}
		}
	}
}

func serveHub(addr string) error {
	h := &bareHub{register: make(chan *hubClient), unregister: make(chan *hubClient), broadcast: make(chan []byte), clients: map[*hubClient]bool{}}
	go h.run()
	up := websocket.Upgrader{ReadBufferSize: 1024, WriteBufferSize: 1024}
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		c := &hubClient{ws: ws, send: make(chan []byte, 256)}
		h.register <- c
		go func() { // write pump
			ping := time.NewTicker(25 * time.Second)
			defer func() { ping.Stop(); ws.Close() }()
			for {
				select {
				case m, ok := <-c.send:
					ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
					if !ok {
						ws.WriteMessage(websocket.CloseMessage, nil)
						return
					}
					if err := ws.WriteMessage(websocket.TextMessage, m); err != nil {
						return
					}
				case <-ping.C:
					if err := ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(10*time.Second)); err != nil {
						return
					}
				}
			}
		}()
		defer func() { h.unregister <- c; ws.Close() }()
		ws.SetReadLimit(64 << 10)
		for { // read pump
			_, m, err := ws.ReadMessage()
			if err != nil {
				return
			}
			h.broadcast <- m
		}
	})
	log.Printf("bare hub listening on %s", addr)
	return http.ListenAndServe(addr, mux)
}
