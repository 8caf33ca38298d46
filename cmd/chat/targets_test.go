package main

import (
	"slices"
	"strings"
	"testing"
)

// TestTargetModuleOrder: every target resolves, dependencies first, in the
// start order the services rely on.
func TestTargetModuleOrder(t *testing.T) {
	for name, want := range map[string]string{
		"all":     "http broker kafka jwt database history router analytics-scheduler edge",
		"broker":  "http broker",
		"edge":    "http broker kafka jwt edge",
		"router":  "http broker kafka jwt router",
		"history": "http broker kafka jwt database history",
	} {
		order, err := resolve(append([]string{"http"}, targets[name].modules...))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got := strings.Join(order, " "); got != want {
			t.Errorf("-target=%s modules %q, want %q", name, got, want)
		}
	}
	for name, m := range modules {
		for _, d := range m.deps {
			if _, ok := modules[d]; !ok {
				t.Errorf("module %s depends on unknown %s", name, d)
			}
		}
	}
	for name, tg := range targets {
		if (tg.job == nil) == (len(tg.modules) == 0) {
			t.Errorf("target %s: want modules or a job", name)
		}
	}
	modules["cycle-a"] = module{deps: []string{"cycle-b"}}
	modules["cycle-b"] = module{deps: []string{"cycle-a"}}
	defer func() { delete(modules, "cycle-a"); delete(modules, "cycle-b") }()
	if _, err := resolve([]string{"cycle-a"}); err == nil || !strings.Contains(err.Error(), "cycle") {
		t.Fatalf("a dependency cycle: %v", err)
	}
	if _, err := resolve([]string{"nope"}); err == nil {
		t.Fatal("unknown module resolved")
	}
	if !slices.Contains(strings.Split(targetNames(), ", "), "analytics") {
		t.Fatalf("targetNames() = %q", targetNames())
	}
}
