"""The federated facade over eight real Orthanc archives behind fault proxies."""
