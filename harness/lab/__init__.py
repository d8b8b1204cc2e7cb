"""The docker lab: base image, lab CA, artifact mirror, ACME CA (Pebble), remote client, target host."""
