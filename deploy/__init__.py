"""Deployment: the Helm chart (`helm/`) and the local cluster behind haproxy (`local/`)."""
