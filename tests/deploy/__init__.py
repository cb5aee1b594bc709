"""The deployment: the container image and compose file (checked statically: no container engine here),
the Kubernetes manifests (kubernetes-validate), and the compose topology run natively (nginx, two gunicorn
facade instances, PostgreSQL, Redis, Orthanc archives on loopback)."""
