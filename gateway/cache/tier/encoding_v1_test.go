package tier

import (
	"encoding/binary"
	"net/http"
	"reflect"
	"testing"
	"time"
)

// appendV1 is AppendMeta as it was before version 2, to check that records
// L2 and L3 wrote then still decode.
func appendV1(dst []byte, m *Meta) []byte {
	dst = append(dst, encodingV1, byte(m.Kind))
	var flags byte
	if m.Invalidated {
		flags |= 1
	}
	dst = append(dst, flags)
	dst = binary.AppendUvarint(dst, uint64(m.Status))
	dst = binary.AppendVarint(dst, m.RequestTime.UnixNano())
	dst = binary.AppendVarint(dst, m.ResponseTime.UnixNano())
	dst = binary.AppendVarint(dst, int64(m.TTL))
	dst = binary.AppendUvarint(dst, m.Gen)
	dst = binary.AppendVarint(dst, m.Size)
	dst = appendString(dst, m.Site)
	dst = appendString(dst, m.URL)
	dst = binary.AppendUvarint(dst, uint64(len(m.Vary)))
	for _, v := range m.Vary {
		dst = appendString(dst, v)
	}
	n := 0
	for _, vs := range m.Header {
		n += len(vs)
	}
	dst = binary.AppendUvarint(dst, uint64(n))
	for k, vs := range m.Header {
		for _, v := range vs {
			dst = appendString(dst, k)
			dst = appendString(dst, v)
		}
	}
	return dst
}

// nginxLike is the header of a typical stored response.
func nginxLike() *Meta {
	return &Meta{
		Kind: KindResponse, Site: "bench", URL: "http://127.0.0.1:8090/obj/1k.bin?o=12345", Status: 200,
		Header: http.Header{
			"Server": {"nginx/1.22.1"}, "Date": {"Fri, 27 Nov 2026 14:42:05 GMT"},
			"Content-Type": {"application/octet-stream"}, "Content-Length": {"1024"},
			"Last-Modified": {"Fri, 27 Nov 2026 14:27:08 GMT"}, "Etag": {`"6b09933c-400"`},
			"Cache-Control": {"public, max-age=3600"}, "Accept-Ranges": {"bytes"},
		},
		RequestTime: time.Unix(1800000000, 1000), ResponseTime: time.Unix(1800000000, 2500000), Size: 1024,
	}
}

func TestVersion1RecordsStillDecode(t *testing.T) {
	m := nginxLike()
	m.Vary = []string{"accept-encoding"}
	m.Header["X-Two"] = []string{"a", "b"}
	got, body, err := DecodeMeta(append(appendV1(nil, m), "body"...))
	if err != nil || string(body) != "body" || !reflect.DeepEqual(got, m) {
		t.Fatalf("v1 record: %v %q\n got %+v\nwant %+v", err, body, got, m)
	}
}

// Version 2 exists to make L1's per-object cost smaller; keep it so.
func TestVersion2IsSmaller(t *testing.T) {
	v1, v2 := len(appendV1(nil, nginxLike())), len(AppendMeta(nil, nginxLike()))
	t.Logf("typical record: v1 %d bytes, v2 %d bytes", v1, v2)
	if v2 > v1-100 {
		t.Fatalf("v2 record is %d bytes against v1's %d; want at least 100 bytes smaller", v2, v1)
	}
}
