package chatevent

import (
	"errors"
	"fmt"
	"strings"

	json "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// The contract decodes JSON strictly (frames, request bodies, token
// claims): names are case-sensitive and given once, text is UTF-8.
// encoding/json would fold case, keep the last of duplicates and replace
// invalid text, so a value could stand in for another.

// CaseVariant returns the name of known that name is a case variant of
// ("ROOM" of "room"), or "" when there is none (name itself is known, or
// unrelated).
func CaseVariant(name string, known []string) string {
	for _, k := range known {
		if name != k && strings.EqualFold(name, k) {
			return k
		}
	}
	return ""
}

// JSONProblem describes an error of the strict decoder without echoing the
// input.
func JSONProblem(err error) string {
	var se *json.SemanticError
	if errors.As(err, &se) && se.JSONPointer != "" {
		return fmt.Sprintf("member %q has the wrong type", strings.TrimPrefix(string(se.JSONPointer), "/"))
	}
	var syn *jsontext.SyntacticError
	if errors.As(err, &syn) {
		if errors.Is(err, jsontext.ErrDuplicateName) {
			return "duplicate member " + strings.TrimPrefix(string(syn.JSONPointer), "/")
		}
		if m := strings.TrimPrefix(string(syn.JSONPointer), "/"); m != "" && (strings.Contains(syn.Err.Error(), "surrogate") || strings.Contains(syn.Err.Error(), "UTF-8")) {
			return fmt.Sprintf("member %q is not valid text: a lone surrogate escape or invalid UTF-8", m)
		}
		return "not JSON"
	}
	return err.Error()
}
