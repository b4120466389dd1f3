module github.com/meridian-edge/meridian/plugins/kit

go 1.26.0

require github.com/extism/go-pdk v1.1.3
