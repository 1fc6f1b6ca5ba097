"""Deployment files (the Helm chart, alert rules); `deploy.local` runs the local cluster."""
