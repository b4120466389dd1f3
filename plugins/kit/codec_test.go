package kit

import (
	"bytes"
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
