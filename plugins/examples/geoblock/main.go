// Command geoblock answers 451 to clients in the countries of config
// "countries" (comma-separated ISO codes, e.g. "KP,IR") or the regions of
// config "regions" (e.g. "US-CA" as country-region). With config
// "annotate" = "true" it also passes the client's location, read with the
// meridian_geo host function, to the origin in x-client-geo.
package main

import (
	"strconv"
	"strings"

	"github.com/meridian-edge/meridian/plugins/kit"
)

//go:wasmexport on_request
func onRequest() int32 {
	return kit.HandleRequest(func(req *kit.Request, act *kit.Actions) error {
		countries, _ := kit.Config("countries")
		regions, _ := kit.Config("regions")
		if listed(countries, req.Country) || listed(regions, req.Country+"-"+req.Region) {
			act.Respond(451)
			act.RespondHeader("content-type", "text/plain; charset=utf-8")
			act.RespondBody("not available in your region\n")
			return nil
		}
		if a, _ := kit.Config("annotate"); a == "true" {
			if g, ok := kit.ClientGeo(); ok {
				act.SetRequestHeader("x-client-geo", g.Country+";"+g.Region+";"+
					strconv.FormatFloat(g.Lat, 'f', 2, 64)+";"+strconv.FormatFloat(g.Lon, 'f', 2, 64))
			}
		}
		return nil
	})
}

func listed(list, v string) bool {
	if v == "" || v == "-" {
		return false
	}
	for item := range strings.SplitSeq(list, ",") {
		if strings.EqualFold(strings.TrimSpace(item), v) {
			return true
		}
	}
	return false
}

func main() {}
