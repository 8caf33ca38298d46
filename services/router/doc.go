// Package router will own presence and private-message targeting (see DESIGN.md). It is not built yet: -target=router exits with an error until its issue lands.
package router
