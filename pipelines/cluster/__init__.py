"""The cluster: submitting `pipelines` commands to a Ray cluster as jobs over its HTTP job API (`jobs`)
and checking what a job would upload (`upload_check`)."""
