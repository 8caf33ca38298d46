package edge_test

import (
	"testing"

	"github.com/gorilla/websocket"

	"github.com/chatsys/chat/services/edge"
)

// The contract keeps the close codes as plain ints; they are RFC 6455's.
func TestCloseCodesAreGorillas(t *testing.T) {
	for _, tc := range []struct {
		code edge.CloseCode
		want int
	}{
		{edge.CloseGoingAway, websocket.CloseGoingAway},
		{edge.CloseUnsupportedData, websocket.CloseUnsupportedData},
		{edge.CloseInvalidPayload, websocket.CloseInvalidFramePayloadData},
		{edge.CloseTokenExpired, websocket.ClosePolicyViolation},
		{edge.CloseTooLarge, websocket.CloseMessageTooBig},
		{edge.CloseInternal, websocket.CloseInternalServerErr},
	} {
		if int(tc.code) != tc.want {
			t.Errorf("close code %d, want %d", tc.code, tc.want)
		}
	}
}
