package cache

import (
	"net"
	"testing"
	"time"
)

// enteredConn reports when a Write has started.
type enteredConn struct {
	net.Conn
	entered chan struct{}
}

func (c *enteredConn) Write(p []byte) (int, error) {
	close(c.entered)
	return c.Conn.Write(p)
}

// Close must not wait behind a write blocked on a client that stopped
// reading (http.Server.Close relies on Close to unblock it).
func TestCoalescingConnCloseUnblocksWrite(t *testing.T) {
	server, client := net.Pipe() // a Write blocks until the client reads
	defer client.Close()
	cc := &coalescingConn{Conn: &enteredConn{Conn: server, entered: make(chan struct{})}}
	wrote := make(chan error, 1)
	go func() {
		_, err := cc.Write([]byte("never read"))
		wrote <- err
	}()
	<-cc.Conn.(*enteredConn).entered
	closed := make(chan struct{})
	go func() { cc.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		client.Close() // unblock the write so the test can end
		t.Fatal("Close waited for a blocked write")
	}
	if err := <-wrote; err == nil {
		t.Fatal("the blocked write succeeded after Close")
	}
}
