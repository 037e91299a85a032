"""Go text/template oracle (oracle.go) and the Python side of the differential tests."""
