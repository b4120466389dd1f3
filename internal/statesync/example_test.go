package statesync_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/meridian-edge/meridian/internal/natsembed"
	"github.com/meridian-edge/meridian/internal/statesync"
	"github.com/nats-io/nats.go"
)

// A PoP opens its replica, records a purge, and the cache checks a stored
// object against it.
func Example() {
	dir, _ := os.MkdirTemp("", "statesync-example")
	defer os.RemoveAll(dir)
	srv, err := natsembed.Start(natsembed.Options{Addr: "127.0.0.1:0", StoreDir: dir + "/nats", ServerName: "example"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Shutdown()
	nc, err := nats.Connect(srv.ClientURL(), nats.MaxReconnects(-1))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer nc.Close()

	ctx := context.Background()
	node, err := statesync.Open(ctx, statesync.Options{NodeID: "ams-1", Conn: nc, DataDir: dir + "/sync"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer node.Close()

	storedAt := time.Now().Add(-time.Hour)
	if _, err := node.Purge(ctx, statesync.PurgeRecord{Site: "shop.example", Kind: statesync.PurgeSurrogateKey, Value: "product-42"}); err != nil {
		fmt.Println(err)
		return
	}
	v := node.CheckPurged("shop.example", "https://shop.example/p/42", []string{"product-42"}, storedAt)
	fmt.Println("purged:", v.Purged, "by:", v.By.Kind, v.By.Value)
	// Output: purged: true by: surrogate-key product-42
}
