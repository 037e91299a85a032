"""The test bench: the simulated control plane and HAProxy sandbox used by the tests, the benchmarks and `monitor demo`.

Not part of the sidecar's runtime: the main job never imports this package (import-linter checks it), only
`monitor demo` does, lazily. Modules: ``apiserver`` (a simulated Kubernetes API server), ``haproxy`` (a real
HAProxy in a sandbox behind the reload handler, and fake TLS API servers), ``pki`` (CAs, certificates,
kubeconfigs), ``demo`` (``monitor demo``).
"""
