module modelgate.dev/pause

go 1.24
