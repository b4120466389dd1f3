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

// Header values come back byte for byte, whether stored as dates, under
// common or unknown names, or repeated.
func TestHeaderValuesByteForByte(t *testing.T) {
	h := http.Header{
		"Date":          {"Fri, 27 Nov 2026 14:42:05 GMT"},
		"Last-Modified": {"Fri, 27 Nov 2026 4:27:08 GMT"},  // not IMF-fixdate: kept as text
		"Expires":       {"Thu, 01 Jan 1970 00:00:00 GMT"}, // the epoch
		"X-Date":        {"Sat, 28 Nov 2026 00:00:00 GMT"}, // a date under an unknown name
		"X-Odd":         {"fri, 27 nov 2026 14:42:05 gmt"}, // parses loosely, formats differently
		"Set-Cookie":    {"a=1; Path=/", "b=2", ""},        // repeated, one empty
		"Etag":          {`W/"x"`},
		"X-Long":        {string(make([]byte, 300))},
	}
	m := &tier.Meta{Status: 200, Site: "s", URL: "u", Header: h, ResponseTime: time.Unix(5, 0), RequestTime: time.Unix(4, 999)}
	got, _, err := tier.DecodeMeta(tier.AppendMeta(nil, m))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Header, h) {
		t.Fatalf("header:\n got %q\nwant %q", got.Header, h)
	}
	if !got.RequestTime.Equal(m.RequestTime) || !got.ResponseTime.Equal(m.ResponseTime) {
		t.Fatalf("times %v %v", got.RequestTime, got.ResponseTime)
	}
}
