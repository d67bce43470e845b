package main

import (
	"fmt"
	"os"

	"golang.org/x/net/websocket"
)

// wsClientMain is the WebSocket client the test binary becomes in the jail
// (see TestMain).
func wsClientMain(url string) int {
	c, err := websocket.Dial(url, "", "http://ws.test/")
	if err != nil {
		fmt.Fprintln(os.Stderr, "ws dial:", err)
		return 1
	}
	defer c.Close()
	if err := websocket.Message.Send(c, "hello through the jail"); err != nil {
		fmt.Fprintln(os.Stderr, "ws send:", err)
		return 1
	}
	var msg string
	if err := websocket.Message.Receive(c, &msg); err != nil {
		fmt.Fprintln(os.Stderr, "ws receive:", err)
		return 1
	}
	fmt.Println("ws echo:", msg)
	return 0
}
