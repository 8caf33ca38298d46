// Package analytics will compute daily active users and word counts from the log (see DESIGN.md). It is not built yet: -target=analytics exits with an error until its issue lands.
package analytics
