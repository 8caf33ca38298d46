// Package httperr writes the HTTP APIs' one error shape:
// {"error":{"code":…,"message":…}}.
package httperr

import (
	"encoding/json"
	"net/http"
)

// Body is the error shape.
type Body struct {
	Error Detail `json:"error"`
}

// Detail is the error's stable code and its human message.
type Detail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Write answers status with {"error":{"code":code,"message":msg}}.
func Write(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(Body{Detail{code, msg}})
}
