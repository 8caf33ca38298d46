// Package history will write the log into PostgreSQL and serve the history API (see DESIGN.md). It is not built yet: -target=history exits with an error until its issue lands.
package history
