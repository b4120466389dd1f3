module github.com/meridian-edge/meridian/plugins/examples

go 1.26.0

require (
	github.com/extism/go-pdk v1.1.3
	github.com/meridian-edge/meridian/plugins/kit v0.0.0
)

replace github.com/meridian-edge/meridian/plugins/kit => ../kit
