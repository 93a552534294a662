"""Side effects behind small interfaces: local processes and files here;
Kubernetes, S3 and Git implementations share the same interfaces."""
