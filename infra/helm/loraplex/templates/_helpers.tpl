{{- define "loraplex.name" -}}{{ .Release.Name }}-loraplex{{- end -}}
{{- define "loraplex.env" -}}
- name: LORAPLEX_WORKER_SECRET
  valueFrom: { secretKeyRef: { name: {{ include "loraplex.name" . }}, key: workerSecret } }
- name: LORAPLEX_S3_BUCKET
  value: {{ .Values.s3.bucket | quote }}
- name: LORAPLEX_S3_REGION
  value: {{ .Values.s3.region | quote }}
{{- if .Values.s3.endpoint }}
- name: LORAPLEX_S3_ENDPOINT
  value: {{ .Values.s3.endpoint | quote }}
{{- end }}
- name: LORAPLEX_S3_FORCE_PATH_STYLE
  value: {{ .Values.s3.forcePathStyle | quote }}
{{- if .Values.s3.accessKeyId }}
- name: AWS_ACCESS_KEY_ID
  valueFrom: { secretKeyRef: { name: {{ include "loraplex.name" . }}, key: s3AccessKeyId } }
- name: AWS_SECRET_ACCESS_KEY
  valueFrom: { secretKeyRef: { name: {{ include "loraplex.name" . }}, key: s3SecretAccessKey } }
{{- end }}
{{- end -}}
