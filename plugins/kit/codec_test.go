package kit

import (
	"bytes"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
)

func TestActionsEncoding(t *testing.T) {
	a := NewActions()
	a.SetRequestHeader("x-a", "1")
	a.CacheTTL(60)
	a.Respond(403)
	a.RespondBody("no")
	b, err := a.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{1,
		0x01, 5, 0, 3, 'x', '-', 'a', '1',
		0x07, 4, 0, 60, 0, 0, 0,
		0x09, 2, 0, 0x93, 0x01,
		0x0B, 2, 0, 'n', 'o'}
	if !bytes.Equal(b, want) {
		t.Fatalf("got % x\nwant % x", b, want)
	}
}

func TestActionsRejectLongHeaderName(t *testing.T) {
	a := NewActions()
	a.SetRequestHeader(string(make([]byte, 300)), "v")
	if _, err := a.Bytes(); err == nil {
		t.Fatal("want an error for a 300 byte header name")
	}
}

func TestDecodeRequest(t *testing.T) {
	in := []byte{1, 1,
		0x01, 3, 0, 'G', 'E', 'T',
		0x05, 6, 0, 3, 'x', '-', 'a', 'h', 'i',
		0x07, 2, 0, 'D', 'E',
		0x7F, 1, 0, 0, // unknown tag, skipped
	}
	r, err := DecodeRequest(in)
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := r.Header("X-A"); r.Method != "GET" || r.Country != "DE" || !ok || v != "hi" {
		t.Fatalf("got %+v", r)
	}
	if _, err := DecodeRequest(in[:len(in)-2]); err == nil {
		t.Fatal("truncated input must fail")
	}
	if _, err := DecodeRequest([]byte{2, 1}); err == nil {
		t.Fatal("other contract version must fail")
	}
}

func TestDecodeResponse(t *testing.T) {
	in := []byte{1, 2,
		0x10, 2, 0, 0x2D, 0x01, // 301
		0x11, 6, 0, 3, 'x', '-', 'b', 'o', 'k',
		0x11, 5, 0, 1, 'y', 'z', 'z', 'z',
		0x0B, 8, 0, 0xE8, 0x03, 0, 0, 0, 0, 0, 0, // 1000 ms
	}
	r, err := DecodeResponse(in)
	if err != nil {
		t.Fatal(err)
	}
	check := func() {
		t.Helper()
		xb, ok1 := r.Header("X-B")
		y, ok2 := r.Header("y")
		if r.Status != 301 || !ok1 || xb != "ok" || !ok2 || y != "zzz" || r.TimeUnixMs != 1000 || len(r.Headers) != 2 {
			t.Fatalf("got %+v", r)
		}
	}
	check()
	// The result does not alias the input: the host may reuse its buffer.
	for i := range in {
		in[i] = 0
	}
	check()
	if _, err := DecodeResponse([]byte{1, 1, 0x10, 2, 0, 200, 0}); err == nil {
		t.Fatal("a request phase must not decode as a response")
	}
	if _, err := DecodeResponse([]byte{1, 2, 0x11, 6, 0, 3}); err == nil {
		t.Fatal("truncated input must fail")
	}
}

func TestDecodeGeo(t *testing.T) {
	coord := func(f float64) []byte {
		b := make([]byte, 8)
		v := math.Float64bits(f)
		for i := range b {
			b[i] = byte(v >> (8 * i))
		}
		return b
	}
	in := []byte{0x07, 2, 0, 'F', 'R', 0x08, 3, 0, 'I', 'D', 'F', 0x20, 8, 0}
	in = append(in, coord(48.85)...)
	in = append(in, 0x21, 8, 0)
	in = append(in, coord(2.35)...)
	g, err := DecodeGeo(in)
	if err != nil {
		t.Fatal(err)
	}
	want := Geo{Country: "FR", Region: "IDF", Lat: 48.85, Lon: 2.35}
	if g != want {
		t.Fatalf("got %+v, want %+v", g, want)
	}
	for i := range in {
		in[i] = 0
	}
	if g != want {
		t.Fatalf("after the input changed: %+v (the result must not alias it)", g)
	}
	if _, err := DecodeGeo([]byte{0x20, 4, 0, 1, 2, 3, 4}); err == nil {
		t.Fatal("a coordinate of 4 bytes must fail")
	}
}

// TestDecodeRefusesEveryTruncation: cut anywhere inside a record, a
// description fails to decode (it is never read as a shorter valid one),
// in both phases; a header record whose name length passes its end fails.
func TestDecodeRefusesEveryTruncation(t *testing.T) {
	req := []byte{1, 1,
		0x01, 3, 0, 'G', 'E', 'T',
		0x05, 6, 0, 3, 'x', '-', 'a', 'h', 'i',
		0x09, 4, 0, 'f', 'r', 'a', '1',
	}
	resp := []byte{1, 2,
		0x10, 2, 0, 200, 0,
		0x11, 6, 0, 3, 'x', '-', 'b', 'o', 'k',
	}
	recordEnds := map[string][]int{"request": {2, 8, 17, 24}, "response": {2, 7, 16}}
	for name, in := range map[string][]byte{"request": req, "response": resp} {
		decode := func(b []byte) error {
			if name == "request" {
				_, err := DecodeRequest(b)
				return err
			}
			_, err := DecodeResponse(b)
			return err
		}
		if err := decode(in); err != nil {
			t.Fatalf("%s: the whole description: %v", name, err)
		}
		for n := 2; n < len(in); n++ {
			atEnd := false
			for _, e := range recordEnds[name] {
				atEnd = atEnd || e == n
			}
			if err := decode(in[:n]); (err == nil) != atEnd {
				t.Errorf("%s cut at %d of %d bytes: err %v", name, n, len(in), err)
			}
		}
	}
	badReq := []byte{1, 1, 0x05, 3, 0, 9, 'x', 'y'}
	if _, err := DecodeRequest(badReq); err == nil {
		t.Fatal("a request header whose name passes the record's end must fail")
	}
	badResp := []byte{1, 2, 0x11, 3, 0, 9, 'x', 'y'}
	if _, err := DecodeResponse(badResp); err == nil {
		t.Fatal("a response header whose name passes the record's end must fail")
	}
}

// TestDecodeRequestFields: every field of contract v1 lands in its place,
// with the headers in order, and a description without headers has none.
func TestDecodeRequestFields(t *testing.T) {
	in := []byte{1, 1,
		0x01, 4, 0, 'P', 'O', 'S', 'T',
		0x02, 2, 0, '/', 'a',
		0x03, 3, 0, 'q', '=', '1',
		0x04, 4, 0, 'h', '.', 'i', 'o',
		0x05, 4, 0, 1, 'a', '1', '2',
		0x06, 7, 0, '1', '.', '2', '.', '3', '.', '4',
		0x07, 2, 0, 'F', 'R',
		0x08, 3, 0, 'I', 'D', 'F',
		0x05, 3, 0, 1, 'b', '3',
		0x09, 4, 0, 'p', 'a', 'r', '1',
		0x0A, 2, 0, 'e', 'u',
		0x0B, 8, 0, 0xE8, 0x03, 0, 0, 0, 0, 0, 0,
	}
	r, err := DecodeRequest(in)
	if err != nil {
		t.Fatal(err)
	}
	want := Request{Method: "POST", Path: "/a", Query: "q=1", Host: "h.io", ClientIP: "1.2.3.4", Country: "FR", Region: "IDF",
		PoP: "par1", PoPRegion: "eu", TimeUnixMs: 1000}
	hs := r.Headers
	r.Headers = nil
	if !reflect.DeepEqual(*r, want) || len(hs) != 2 || hs[0] != (Header{"a", "12"}) || hs[1] != (Header{"b", "3"}) {
		t.Fatalf("got %+v %+v", *r, hs)
	}
	r, err = DecodeRequest([]byte{1, 1, 0x01, 3, 0, 'G', 'E', 'T'})
	if err != nil || r.Headers != nil || r.Method != "GET" {
		t.Fatalf("without headers: %+v %v", r, err)
	}
}

// TestActionsReuse: the kit hands the same Actions to every call; init
// must forget the previous call's actions and its encoding error.
func TestActionsReuse(t *testing.T) {
	a := NewActions()
	a.SetRequestHeader(string(make([]byte, 300)), "v")
	a.SetResponseHeader("x-a", "1")
	if _, err := a.Bytes(); err == nil {
		t.Fatal("want the header name error")
	}
	a.init()
	a.NoStore()
	b, err := a.Bytes()
	if err != nil || !bytes.Equal(b, []byte{1, 0x08, 0, 0}) {
		t.Fatalf("after init: % x, %v", b, err)
	}
}

// TestActionsGrowKeepsEveryAction fills an action list well past its inline
// buffer, mixing header and plain actions, and reads every record back.
func TestActionsGrowKeepsEveryAction(t *testing.T) {
	a := NewActions()
	type rec struct {
		tag        byte
		name, body string
	}
	var want []rec
	for i := range 60 {
		name, value := fmt.Sprintf("x-h%d", i), strings.Repeat("v", i)
		a.SetResponseHeader(name, value)
		want = append(want, rec{0x0C, name, value})
		a.SetPath("/p" + value)
		want = append(want, rec{0x03, "", "/p" + value})
	}
	b, err := a.Bytes()
	if err != nil || b[0] != ContractVersion {
		t.Fatalf("% x..., %v", b[:1], err)
	}
	s := string(b[1:])
	for i, w := range want {
		tag, v, next, err := nextField(s, 0)
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		s = s[next:]
		got := rec{tag: tag, body: v}
		if tag == 0x0C {
			h, err := decodeHeader(v)
			if err != nil {
				t.Fatalf("record %d: %v", i, err)
			}
			got.name, got.body = h.Name, h.Value
		}
		if got != w {
			t.Fatalf("record %d: got %+v, want %+v", i, got, w)
		}
	}
	if s != "" {
		t.Fatalf("%d bytes after the last record", len(s))
	}
}

// TestActionsRefusals: the first refused action's error is the one kept,
// and it names what was wrong.
func TestActionsRefusals(t *testing.T) {
	for _, c := range []struct {
		name string
		add  func(*Actions)
		want string
	}{
		{"empty header name", func(a *Actions) { a.SetRequestHeader("", "v") }, "must be 1..255 bytes"},
		{"header value too long", func(a *Actions) { a.SetResponseHeader("x-a", strings.Repeat("v", 70000)) }, "over 65535"},
		{"path too long", func(a *Actions) { a.SetPath(strings.Repeat("/", 70000)) }, "over 65535"},
	} {
		a := NewActions()
		c.add(a)
		a.RespondHeader("", "second error, not reported")
		if _, err := a.Bytes(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.name, err, c.want)
		}
	}
}
