package chatevent

// CloseCode is a WebSocket close code the edge sends (RFC 6455, section
// 7.4; 4000 is the chat's own).
type CloseCode int

// Close codes. Reconnect tells a client whether reconnecting makes sense.
const (
	CloseGoingAway       CloseCode = 1001 // edge shutting down; reconnect
	CloseUnsupportedData CloseCode = 1003 // binary frame
	CloseInvalidPayload  CloseCode = 1007 // text frame not UTF-8
	CloseTokenExpired    CloseCode = 1008 // policy violation: the token expired; reconnect with a new one
	CloseTooLarge        CloseCode = 1009 // frame above the read limit
	CloseInternal        CloseCode = 1011 // resume failed; reconnect with since
	CloseSlowClient      CloseCode = 4000 // send queue overflowed; reconnect with since
)

// Reconnect reports whether a client should reconnect after this close.
func (c CloseCode) Reconnect() bool {
	switch c {
	case CloseGoingAway, CloseInternal, CloseSlowClient, CloseTokenExpired:
		return true
	}
	return false
}

// Label returns the code as a metric label: its decimal number for the
// codes above, "other" for any other code.
func (c CloseCode) Label() string {
	switch c {
	case CloseGoingAway:
		return "1001"
	case CloseUnsupportedData:
		return "1003"
	case CloseInvalidPayload:
		return "1007"
	case CloseTokenExpired:
		return "1008"
	case CloseTooLarge:
		return "1009"
	case CloseInternal:
		return "1011"
	case CloseSlowClient:
		return "4000"
	}
	return "other"
}
