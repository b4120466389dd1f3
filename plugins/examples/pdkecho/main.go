// Command pdkecho is an ordinary Extism plugin written with go-pdk alone (no
// kit): it reads its whole input, a config value and a var through the
// PDK, logs, keeps a call counter in a var, and answers one request header
// summing all it saw. The PDK moves bytes with input_load_u64/u8,
// load_u64/u8 and store_u64/u8 (partial words byte by byte), and finds
// blocks with length: every per-word path of a kernel.
package main

import (
	"strconv"

	"github.com/extism/go-pdk"
)

//go:wasmexport on_request
func onRequest() int32 {
	in := pdk.Input()
	suffix, _ := pdk.GetConfig("suffix")
	n := 0
	if b := pdk.GetVar("calls"); b != nil {
		n, _ = strconv.Atoi(string(b))
	}
	n++
	pdk.SetVar("calls", []byte(strconv.Itoa(n)))
	pdk.Log(pdk.LogInfo, "seen "+strconv.Itoa(len(in))+" bytes")
	sum := 0
	for i, c := range in {
		sum += (i + 1) * int(c)
	}
	v := strconv.Itoa(len(in)) + "/" + strconv.Itoa(sum) + "/" + suffix + "/" + strconv.Itoa(n)
	name := "x-echo"
	l := 1 + len(name) + len(v)
	out := []byte{1, 0x01, byte(l), byte(l >> 8), byte(len(name))}
	out = append(out, name...)
	out = append(out, v...)
	pdk.Output(out)
	return 0
}

func main() {}
