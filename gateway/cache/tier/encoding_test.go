package tier_test

import (
	"errors"
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/meridian-edge/meridian/gateway/cache/tier"
)

func TestMetaRoundTrip(t *testing.T) {
	m := &tier.Meta{
		Kind: tier.KindResponse, Site: "s", URL: "https://x/y?z", Status: 203,
		Header:      http.Header{"A": {"1", "2"}, "Set-Cookie": {"c=1; Path=/"}},
		RequestTime: time.Unix(100, 5), ResponseTime: time.Unix(101, 7), TTL: time.Minute,
		Invalidated: true, Gen: 42, Vary: []string{"accept"}, Size: 5,
	}
	b := tier.AppendMeta(nil, m)
	b = append(b, "hello"...)
	got, body, err := tier.DecodeMeta(b)
	if err != nil {
		t.Fatal(err)
	}
	if string(body) != "hello" {
		t.Fatalf("body %q", body)
	}
	if !reflect.DeepEqual(got, m) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, m)
	}
}

func TestDecodeRejectsCorruptRecords(t *testing.T) {
	good := tier.AppendMeta(nil, &tier.Meta{Site: "s", URL: "u", Status: 200, Header: http.Header{"K": {"v"}}})
	tests := map[string][]byte{
		"empty":         nil,
		"wrong version": append([]byte{9}, good[1:]...),
		"truncated":     good[:len(good)-3],
		"huge length":   append(good[:len(good)-6:len(good)-6], 0xff, 0xff, 0xff, 0xff, 0x0f),
	}
	for name, b := range tests {
		if _, _, err := tier.DecodeMeta(b); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
	// Every prefix of a good record fails cleanly, never panics.
	for i := 0; i < len(good); i++ {
		if _, _, err := tier.DecodeMeta(good[:i]); err == nil {
			t.Errorf("prefix %d decoded", i)
		}
	}
	_ = errors.New
}
