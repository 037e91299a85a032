"""The Kubernetes adapter: list+watch the API server's Nodes or EndpointSlice and post them to the loop."""

from monitor.adapters.kube.watcher import KubeWatcher

__all__ = ["KubeWatcher"]
