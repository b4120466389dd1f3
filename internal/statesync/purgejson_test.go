package statesync

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// decodePurge must give exactly what json.Unmarshal gives, for the records
// Purge writes (fast path) and for anything else a peer might send (the
// fallback), including rejecting what json.Unmarshal rejects.
func TestDecodePurgeMatchesJSON(t *testing.T) {
	at := time.Date(2026, 11, 27, 15, 50, 21, 123456789, time.UTC)
	var inputs [][]byte
	for _, p := range []PurgeRecord{
		{ID: "pop01.x.1", Site: "shop.example", Kind: PurgeURL, Value: "https://shop.example/a?b=c", At: at, Origin: "pop01"},
		{ID: "p2", Site: "s", Kind: PurgeSite, Soft: true, At: at.In(time.FixedZone("x", 3600)), Origin: "o"},
		{ID: "p3", Site: "s", Kind: PurgePrefix, Value: "https://s/<script>&\"quoted\"\\", At: at},
		{ID: "p4", Site: "s", Kind: PurgeSurrogateKey, Value: "tag-é-日本", At: at},
		{ID: "p5", Site: "s", Kind: PurgeURL, Value: "line\nbreak\u2028", At: at},
		{},
	} {
		b, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		inputs = append(inputs, b)
	}
	for _, s := range []string{
		`{"id":"a","site":"s","kind":"url","value":"v","soft":false,"at":"2026-11-27T15:50:21Z","origin":"o"}`,
		`{"ID":"upper","Site":"s"}`,        // case-insensitive names
		`{"id":"a","id":"b"}`,              // last one wins
		`{"id":"a","extra":1}`,             // unknown field
		`{ "id" : "spaced" }`,              // whitespace
		`{"id":"bad utf8 ` + "\xff" + `"}`, // replaced by U+FFFD
		`{"id":"ctl` + "\x01" + `"}`,       // invalid JSON
		`{"id":"a",}`,                      // trailing comma
		`{"id":"a"`,                        // truncated
		`{"soft":tru}`,                     // bad literal
		`{"soft":"true"}`,                  // wrong type
		`{"at":"2026-11-27T15:50:21"}`,     // no zone
		`{"at":"2026-11-27 15:50:21Z"}`,    // not RFC 3339
		`{"at":null}`,                      // null
		`{"id":null}`,                      // null
		`{}`, `[]`, `null`, `{`, ``, `{"id":"a"}x`, `{"id":"a"}}`,
		`{"kind":"no-such-kind","value":"x"}`,
	} {
		inputs = append(inputs, []byte(s))
	}
	ids := newIDTable()
	ids.add("pop01")
	for _, in := range inputs {
		var want PurgeRecord
		wantErr := json.Unmarshal(in, &want)
		got, err := decodePurge(in)
		if shared, err2 := decodePurgeKey(in, "purge/"+want.Site+"/"+want.ID, ids); !reflect.DeepEqual(shared, got) || (err2 != nil) != (err != nil) {
			t.Errorf("%q: with its key: %+v, %v; without: %+v, %v", in, shared, err2, got, err)
		}
		if (err != nil) != (wantErr != nil) {
			t.Errorf("%q: error %v, json.Unmarshal says %v", in, err, wantErr)
			continue
		}
		if err == nil && !reflect.DeepEqual(got, want) {
			t.Errorf("%q: got %+v, json.Unmarshal gives %+v", in, got, want)
		}
	}
	// The records Purge writes take the fast path.
	if _, ok := decodePurgeFast(inputs[0], "", nil); !ok {
		t.Errorf("%s did not take the fast path", inputs[0])
	}
}

// FuzzDecodePurge checks the fast path against json.Unmarshal on any input.
func FuzzDecodePurge(f *testing.F) {
	f.Add([]byte(`{"id":"a","site":"s","kind":"url","value":"v","soft":true,"at":"2026-11-27T15:50:21.5+01:00","origin":"o"}`))
	f.Add([]byte(`{"id":"a","id":"b","soft":false}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		var want PurgeRecord
		wantErr := json.Unmarshal(in, &want)
		got, err := decodePurge(in)
		if (err != nil) != (wantErr != nil) || (err == nil && !reflect.DeepEqual(got, want)) {
			t.Fatalf("%q: got %+v, %v; json.Unmarshal gives %+v, %v", in, got, err, want, wantErr)
		}
	})
}
