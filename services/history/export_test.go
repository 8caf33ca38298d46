package history

// RoutePatterns returns the patterns Routes registers ("METHOD /path"), for
// the test that checks each is documented.
func RoutePatterns(h *History) []string {
	var out []string
	for _, r := range h.routes() {
		out = append(out, r.pattern)
	}
	return out
}
