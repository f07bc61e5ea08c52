{{/* Chart name, overridable; 63 characters at most (a DNS label). */}}
{{- define "faceid-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Full name of the release's objects. The release name alone when it already
contains the chart name, so `helm install faceid-gateway .` does not give
faceid-gateway-faceid-gateway.
*/}}
{{- define "faceid-gateway.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "faceid-gateway.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "faceid-gateway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The version the pods run: the image tag, else the chart's appVersion. */}}
{{- define "faceid-gateway.version" -}}
{{- .Values.image.tag | default .Chart.AppVersion -}}
{{- end -}}

{{/* Selector labels: stable for the release's lifetime (selectors are immutable). */}}
{{- define "faceid-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "faceid-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "faceid-gateway.labels" -}}
helm.sh/chart: {{ include "faceid-gateway.chart" . }}
{{ include "faceid-gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ include "faceid-gateway.version" . | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: gateway
app.kubernetes.io/part-of: faceid-gateway
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "faceid-gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "faceid-gateway.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "faceid-gateway.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (include "faceid-gateway.version" .) -}}
{{- end -}}
{{- end -}}

{{/*
Where the Tencent keys come from: "simulate" (none needed), "identity" (the
pod's or the node's own role: credentials.mode oidc or cvm-role, no Secret),
"chart" (a Secret this chart makes from credentials.secretId/secretKey),
"existing" (credentials.existingSecret) or "" (nothing configured).
*/}}
{{- define "faceid-gateway.credentialsSource" -}}
{{- $c := .Values.credentials -}}
{{- if .Values.simulate -}}
simulate
{{- else if has $c.mode (list "oidc" "cvm-role") -}}
identity
{{- else if or $c.secretId $c.secretKey -}}
chart
{{- else if $c.existingSecret -}}
existing
{{- end -}}
{{- end -}}

{{/* "true" when the pods call Tencent Cloud STS (TKE OIDC or credentials.roleArn). */}}
{{- define "faceid-gateway.callsSts" -}}
{{- if and (not .Values.simulate) (or (eq .Values.credentials.mode "oidc") .Values.credentials.roleArn) -}}
true
{{- end -}}
{{- end -}}

{{/* "true" when the pods ask the CVM metadata server for keys. */}}
{{- define "faceid-gateway.callsMetadata" -}}
{{- if and (not .Values.simulate) (eq .Values.credentials.mode "cvm-role") -}}
true
{{- end -}}
{{- end -}}

{{/* "true" when TKE's pod-identity webhook sets the pods' OIDC up from the ServiceAccount's annotations. */}}
{{- define "faceid-gateway.oidcWebhook" -}}
{{- $c := .Values.credentials -}}
{{- if and (not .Values.simulate) (eq $c.mode "oidc") $c.oidc.webhook -}}
true
{{- end -}}
{{- end -}}

{{/* "true" when the chart mounts the projected token itself (mode oidc without the webhook). */}}
{{- define "faceid-gateway.oidcProjected" -}}
{{- $c := .Values.credentials -}}
{{- if and (not .Values.simulate) (eq $c.mode "oidc") (not $c.oidc.webhook) -}}
true
{{- end -}}
{{- end -}}

{{/*
The ServiceAccount's annotations: TKE's pod-identity annotations in mode oidc
(https://www.tencentcloud.com/document/product/457/57285), then
serviceAccount.annotations, which win.
*/}}
{{- define "faceid-gateway.serviceAccountAnnotations" -}}
{{- $c := .Values.credentials -}}
{{- $annotations := dict -}}
{{- if include "faceid-gateway.oidcWebhook" . -}}
{{- with $c.oidc.roleArn -}}
{{- $_ := set $annotations "tke.cloud.tencent.com/role-arn" . -}}
{{- end -}}
{{- $_ := set $annotations "tke.cloud.tencent.com/audience" $c.oidc.audience -}}
{{- $_ := set $annotations "tke.cloud.tencent.com/token-expiration" ($c.oidc.tokenExpirationSeconds | int64 | toString) -}}
{{- end -}}
{{- $annotations = merge (deepCopy .Values.serviceAccount.annotations) $annotations -}}
{{- if $annotations -}}
{{- toYaml $annotations -}}
{{- end -}}
{{- end -}}

{{/* Name of the Secret with the Tencent keys (chart-made or existing). */}}
{{- define "faceid-gateway.credentialsSecretName" -}}
{{- if eq (include "faceid-gateway.credentialsSource" .) "chart" -}}
{{- printf "%s-credentials" (include "faceid-gateway.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- .Values.credentials.existingSecret -}}
{{- end -}}
{{- end -}}

{{/* "true" when the replicas share one limit through Redis. */}}
{{- define "faceid-gateway.sharedLimit" -}}
{{- if or .Values.rateLimit.redis.url .Values.rateLimit.redis.existingSecret -}}
true
{{- end -}}
{{- end -}}

{{/* "true" when a gateway-wide budget (spend.budgetDay or budgetMonth) is set. */}}
{{- define "faceid-gateway.gatewayBudget" -}}
{{- $spend := .Values.spend -}}
{{- if or (not (kindIs "invalid" $spend.budgetDay)) (not (kindIs "invalid" $spend.budgetMonth)) -}}
true
{{- end -}}
{{- end -}}

{{/* The most pods the release may run at once. */}}
{{- define "faceid-gateway.maxReplicas" -}}
{{- if .Values.autoscaling.enabled -}}
{{- .Values.autoscaling.maxReplicas | int -}}
{{- else -}}
{{- .Values.replicaCount | int -}}
{{- end -}}
{{- end -}}

{{/* The fewest pods the release runs when healthy. */}}
{{- define "faceid-gateway.minReplicas" -}}
{{- if .Values.autoscaling.enabled -}}
{{- .Values.autoscaling.minReplicas | int -}}
{{- else -}}
{{- .Values.replicaCount | int -}}
{{- end -}}
{{- end -}}

{{/*
`helm upgrade --reuse-values` renders with the previous chart version's
defaults, which lack the keys added since; the templates would then stop at a
nil pointer. Say what happened instead. Called first by every template that
reads those keys (Helm stops at the first template that fails). Each entry is
a dotted path to a map or key added after chart 0.1.0; keys whose absence
reads as their default (a null, an empty string, false) need no entry.
*/}}
{{- define "faceid-gateway.requireCurrentValues" -}}
{{- $missing := list -}}
{{- range $path := list "reloadInterval" "tls" "auth" "connections" "upstreamEncryption" "input" "rateLimit.redis.ca" "spend" -}}
{{- $node := $.Values -}}
{{- $found := true -}}
{{- range splitList "." $path -}}
{{- if and $found (kindIs "map" $node) (hasKey $node .) -}}
{{- $node = index $node . -}}
{{- else -}}
{{- $found = false -}}
{{- end -}}
{{- end -}}
{{- if not $found -}}
{{- $missing = append $missing $path -}}
{{- end -}}
{{- end -}}
{{- if $missing -}}
{{- fail (printf "faceid-gateway: the values lack %s, which chart %s defines: they were reused from an older release (`helm upgrade --reuse-values` keeps the old chart's defaults). Upgrade with --reset-then-reuse-values (Helm 3.14 or later), or pass your values file again, so the new defaults apply." (join ", " $missing) .Chart.Version) -}}
{{- end -}}
{{- end -}}

{{/*
FACEID_ENDPOINT: config.endpoint, one URL (as in every release) or a list,
joined with commas (the first preferred, the others backups in order).
*/}}
{{- define "faceid-gateway.endpoints" -}}
{{- $endpoint := .Values.config.endpoint -}}
{{- if kindIs "slice" $endpoint -}}
{{- join "," $endpoint -}}
{{- else -}}
{{- $endpoint -}}
{{- end -}}
{{- end -}}

{{/* FACEID_RELOAD_INTERVAL: the deprecated credentials.reloadInterval wins when set. */}}
{{- define "faceid-gateway.reloadInterval" -}}
{{- .Values.credentials.reloadInterval | default .Values.reloadInterval -}}
{{- end -}}

{{/*
An optional setting as the binary reads it: "" for null or empty (the
binary's default applies), else the value as text. A bare 0 stays "0" (off),
where `with` alone would drop it.
*/}}
{{- define "faceid-gateway.optionalSetting" -}}
{{- if not (kindIs "invalid" .) -}}
{{- toString . -}}
{{- end -}}
{{- end -}}

{{/* "true" when the gRPC port is mutual TLS (a client CA is configured). */}}
{{- define "faceid-gateway.mtls" -}}
{{- $ca := .Values.tls.clientCA -}}
{{- if and .Values.tls.enabled (or $ca.existingSecret $ca.existingConfigMap) -}}
true
{{- end -}}
{{- end -}}

{{/* FACEID_UPSTREAM_ENCRYPTION; a bare YAML `off` arrives as false. */}}
{{- define "faceid-gateway.upstreamEncryption" -}}
{{- $mode := .Values.upstreamEncryption.mode | toString -}}
{{- if eq $mode "false" -}}
off
{{- else -}}
{{- $mode -}}
{{- end -}}
{{- end -}}

{{/*
Where the mounted files live. Fixed directories, each its own read-only
volume mounted whole (never subPath), so kubelet delivers updates.
*/}}
{{- define "faceid-gateway.tlsDir" -}}/etc/faceid-gateway/tls{{- end -}}
{{- define "faceid-gateway.tokensDir" -}}/etc/faceid-gateway/auth{{- end -}}
{{- define "faceid-gateway.publicKeysDir" -}}/etc/faceid-gateway/tencent-public-keys{{- end -}}
{{- define "faceid-gateway.redisCaDir" -}}/etc/faceid-gateway/redis-ca{{- end -}}
{{- define "faceid-gateway.oidcDir" -}}/etc/faceid-gateway/oidc{{- end -}}

{{- define "faceid-gateway.gracePeriod" -}}
{{- $floor := add .Values.preStopSleepSeconds .Values.drainTimeoutSeconds -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds -}}
{{- add $floor 10 -}}
{{- else -}}
{{- .Values.terminationGracePeriodSeconds | int -}}
{{- end -}}
{{- end -}}

{{/*
Checks the schema cannot express. Every message starts with the chart name and
says what to set.
*/}}
{{- define "faceid-gateway.validate" -}}
{{- include "faceid-gateway.requireCurrentValues" . -}}
{{- $v := .Values -}}
{{- $source := include "faceid-gateway.credentialsSource" . -}}
{{- if eq $source "" -}}
{{- fail "faceid-gateway: no Tencent Cloud credentials. Set credentials.existingSecret to a Secret holding TENCENTCLOUD_SECRET_ID and TENCENTCLOUD_SECRET_KEY, or set credentials.secretId and credentials.secretKey, or use the pods' own identity (credentials.mode=oidc on TKE, credentials.mode=cvm-role on CVM nodes with a CAM role), or set simulate=true to run the built-in simulator for a demo." -}}
{{- end -}}
{{- $c := $v.credentials -}}
{{- if and (eq $source "identity") (or $c.secretId $c.secretKey $c.sessionToken) -}}
{{- fail (printf "faceid-gateway: credentials.mode=%s uses the pods' own CAM role and no keys; remove credentials.secretId, secretKey and sessionToken (or use mode env or file)." $c.mode) -}}
{{- end -}}
{{- if and (include "faceid-gateway.oidcWebhook" .) $v.serviceAccount.create (not $c.oidc.roleArn) (not (hasKey $v.serviceAccount.annotations "tke.cloud.tencent.com/role-arn")) -}}
{{- fail "faceid-gateway: credentials.mode=oidc needs credentials.oidc.roleArn, the CAM role the pods assume (qcs::cam::uin/<account>:roleName/<role>); the chart puts it on the ServiceAccount for TKE's pod-identity webhook." -}}
{{- end -}}
{{- if and (include "faceid-gateway.oidcProjected" .) (not (and $c.oidc.roleArn $c.oidc.providerId)) -}}
{{- fail "faceid-gateway: credentials.mode=oidc with credentials.oidc.webhook=false needs credentials.oidc.roleArn and credentials.oidc.providerId (the CAM OIDC identity provider), since no webhook sets TKE_ROLE_ARN and TKE_PROVIDER_ID." -}}
{{- end -}}
{{- if and (eq $source "chart") (not (and $v.credentials.secretId $v.credentials.secretKey)) -}}
{{- fail "faceid-gateway: credentials.secretId and credentials.secretKey must be set together." -}}
{{- end -}}
{{- if regexMatch "^rediss?://[^/]*@" $v.rateLimit.redis.url -}}
{{- fail "faceid-gateway: rateLimit.redis.url carries credentials, which would land in a ConfigMap. Put the whole URL in a Secret and set rateLimit.redis.existingSecret (and existingSecretKey) instead." -}}
{{- end -}}
{{- if and $v.rateLimit.redis.url $v.rateLimit.redis.existingSecret -}}
{{- fail "faceid-gateway: set either rateLimit.redis.url or rateLimit.redis.existingSecret, not both." -}}
{{- end -}}
{{- $redisCa := $v.rateLimit.redis.ca -}}
{{- if and $redisCa.existingSecret $redisCa.existingConfigMap -}}
{{- fail "faceid-gateway: set either rateLimit.redis.ca.existingSecret or rateLimit.redis.ca.existingConfigMap, not both." -}}
{{- end -}}
{{- if or $redisCa.existingSecret $redisCa.existingConfigMap -}}
{{- if not (include "faceid-gateway.sharedLimit" .) -}}
{{- fail "faceid-gateway: rateLimit.redis.ca is the CA bundle of a rediss:// Redis, but no Redis is set: set rateLimit.redis.url or rateLimit.redis.existingSecret too, or leave rateLimit.redis.ca empty." -}}
{{- end -}}
{{- if hasPrefix "redis://" $v.rateLimit.redis.url -}}
{{- fail "faceid-gateway: rateLimit.redis.ca is only for TLS, but rateLimit.redis.url is redis:// (plaintext); the gateway would refuse to start. Use a rediss:// URL, or leave rateLimit.redis.ca empty." -}}
{{- end -}}
{{- if eq (trimSuffix "/" $v.credentials.file.mountPath) (include "faceid-gateway.redisCaDir" .) -}}
{{- fail (printf "faceid-gateway: credentials.file.mountPath=%s is where the chart mounts the Redis CA bundle; choose another directory." (include "faceid-gateway.redisCaDir" .)) -}}
{{- end -}}
{{- end -}}
{{- $max := include "faceid-gateway.maxReplicas" . | int -}}
{{- /* Before the rate-limit rule: rateLimit.perReplica cannot fix this one. */ -}}
{{- if and (include "faceid-gateway.gatewayBudget" .) (or (gt $max 1) $v.autoscaling.enabled) (not (include "faceid-gateway.sharedLimit" .)) -}}
{{- fail (printf "faceid-gateway: refusing to run %d replicas (replicaCount > 1 or autoscaling.enabled) with a gateway-wide budget (spend.budgetDay or spend.budgetMonth) but no Redis. Without Redis each replica counts billable calls against the whole budget by itself, so together they could spend several times it. Set rateLimit.redis.url (or rateLimit.redis.existingSecret) so every replica shares the budget counters, run a single replica, or leave spend.budgetDay and spend.budgetMonth unset." $max) -}}
{{- end -}}
{{- if and (or (gt $max 1) $v.autoscaling.enabled) (not (include "faceid-gateway.sharedLimit" .)) -}}
{{- if not $v.rateLimit.perReplica -}}
{{- fail (printf "faceid-gateway: refusing to run %d replicas (replicaCount > 1 or autoscaling.enabled) without a shared rate limit. Tencent allows %d CheckIdCardInformation calls per second per account (rateLimit.accountLimit) in total, and each replica would enforce rateLimit.perSecond=%d on its own, so together they would exceed it and calls would fail with RequestLimitExceeded. Either set rateLimit.redis.url (or rateLimit.redis.existingSecret) so all replicas share one limit, or divide the limit yourself and set rateLimit.perReplica=true with rateLimit.perSecond <= accountLimit / max replicas." $max ($v.rateLimit.accountLimit | int) ($v.rateLimit.perSecond | int)) -}}
{{- end -}}
{{- if gt (mul $max $v.rateLimit.perSecond) ($v.rateLimit.accountLimit | int64) -}}
{{- fail (printf "faceid-gateway: rateLimit.perReplica=true but rateLimit.perSecond=%d x %d replicas = %d exceeds rateLimit.accountLimit=%d. Lower rateLimit.perSecond to at most %d, or use rateLimit.redis." ($v.rateLimit.perSecond | int) $max (mul $max $v.rateLimit.perSecond) ($v.rateLimit.accountLimit | int) (div $v.rateLimit.accountLimit $max)) -}}
{{- end -}}
{{- end -}}
{{- if and $v.autoscaling.enabled (lt ($v.autoscaling.maxReplicas | int) ($v.autoscaling.minReplicas | int)) -}}
{{- fail "faceid-gateway: autoscaling.maxReplicas must be at least autoscaling.minReplicas." -}}
{{- end -}}
{{- if and $v.tls.enabled (not $v.tls.existingSecret) -}}
{{- fail "faceid-gateway: tls.enabled=true needs tls.existingSecret, a kubernetes.io/tls Secret with tls.crt and tls.key (for example a cert-manager Certificate's secretName)." -}}
{{- end -}}
{{- $ca := $v.tls.clientCA -}}
{{- if and $ca.existingSecret $ca.existingConfigMap -}}
{{- fail "faceid-gateway: set either tls.clientCA.existingSecret or tls.clientCA.existingConfigMap, not both." -}}
{{- end -}}
{{- if and (or $ca.existingSecret $ca.existingConfigMap) (not $v.tls.enabled) -}}
{{- fail "faceid-gateway: tls.clientCA asks for mutual TLS, which needs TLS: set tls.enabled=true and tls.existingSecret, or leave tls.clientCA empty." -}}
{{- end -}}
{{- if and (include "faceid-gateway.mtls" .) $v.tests.enabled (not $v.tests.tls.clientSecret) -}}
{{- fail "faceid-gateway: with mutual TLS the `helm test` pod needs a client certificate from the client CA. Set tests.tls.clientSecret to a kubernetes.io/tls Secret holding one, or set tests.enabled=false." -}}
{{- end -}}
{{- $credDir := trimSuffix "/" $v.credentials.file.mountPath -}}
{{- if has $credDir (list (include "faceid-gateway.tlsDir" .) (include "faceid-gateway.tokensDir" .) (include "faceid-gateway.publicKeysDir" .) (include "faceid-gateway.oidcDir" .)) -}}
{{- fail (printf "faceid-gateway: credentials.file.mountPath=%s is where the chart mounts TLS, token or public-key files; choose another directory." $credDir) -}}
{{- end -}}
{{- $pk := $v.upstreamEncryption.tencentPublicKeys -}}
{{- if and $pk.existingConfigMap (not (or $pk.rsaKey $pk.sm2Key)) -}}
{{- fail "faceid-gateway: upstreamEncryption.tencentPublicKeys.existingConfigMap is set but neither rsaKey nor sm2Key names a key in it." -}}
{{- end -}}
{{- if and (or $pk.rsaKey $pk.sm2Key) (not $pk.existingConfigMap) -}}
{{- fail "faceid-gateway: upstreamEncryption.tencentPublicKeys.rsaKey/sm2Key need existingConfigMap, the ConfigMap holding the PEM keys." -}}
{{- end -}}
{{- $floor := add $v.preStopSleepSeconds $v.drainTimeoutSeconds -}}
{{- if le (include "faceid-gateway.gracePeriod" . | int) ($floor | int) -}}
{{- fail (printf "faceid-gateway: terminationGracePeriodSeconds=%d must be larger than preStopSleepSeconds + drainTimeoutSeconds = %d, or in-flight calls are killed before they drain. Leave it null to get %d." (include "faceid-gateway.gracePeriod" . | int) ($floor | int) (add $floor 10)) -}}
{{- end -}}
{{- end -}}
