{{- define "guard.labels" -}}
app.kubernetes.io/name: guard-agent
app.kubernetes.io/part-of: guard
{{- end -}}
