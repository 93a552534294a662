"""``kubectl modelgate``: the kubectl plugin (runs on the caller's machine,
with the caller's kubeconfig and identity)."""
