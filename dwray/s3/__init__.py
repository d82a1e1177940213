"""The S3 protocol as pure functions and small classes: no Ray, no Serve, no sockets.

``serve_apps`` wires these into HTTP; everything here is unit-testable in one
process: error codes, XML, request signing checks, aws-chunked bodies,
checksums, ranges and conditional requests.
"""
