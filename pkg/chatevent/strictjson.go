package chatevent

import (
	"errors"
	"fmt"
	"reflect"
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

// DecodeObject decodes the JSON object b into the struct dst points to, as
// strictly as a frame: a member given twice, a case variant of one of dst's
// names, text that is not UTF-8, a wrong type or anything after the object
// is refused; members dst does not name are ignored. The error describes
// the problem without echoing the input.
func DecodeObject(b []byte, dst any) error {
	if t := strings.TrimLeft(string(b), " \t\r\n"); !strings.HasPrefix(t, "{") {
		return errors.New("not a valid JSON object")
	}
	var members map[string]jsontext.Value
	if err := json.Unmarshal(b, &members); err != nil {
		return fmt.Errorf("not a valid JSON object: %s", JSONProblem(err))
	}
	known := jsonNames(dst)
	for name := range members {
		if k := CaseVariant(name, known); k != "" {
			return fmt.Errorf("member %q: names are case-sensitive, want %q", name, k)
		}
	}
	if err := json.Unmarshal(b, dst); err != nil {
		return errors.New(JSONProblem(err))
	}
	return nil
}

// jsonNames lists the JSON member names of the struct dst points to.
func jsonNames(dst any) []string {
	t := reflect.TypeOf(dst).Elem()
	var names []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch {
		case name == "-" || !f.IsExported():
		case name == "":
			names = append(names, f.Name) // matched by its Go name
		default:
			names = append(names, name)
		}
	}
	return names
}
