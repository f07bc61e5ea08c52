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

{{/*
The version the pods run: the image tag, else the chart's appVersion. A tag
given as a number (`--set image.tag=2`) is taken as its text.
*/}}
{{- define "faceid-gateway.version" -}}
{{- $tag := .Values.image.tag -}}
{{- if kindIs "invalid" $tag -}}
{{- .Chart.AppVersion -}}
{{- else -}}
{{- toString $tag | default .Chart.AppVersion -}}
{{- end -}}
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
{{- with $v.rateLimit.redis.url -}}
{{- if gt (include "faceid-gateway.urlPort" (list . (dict "redis" 6379 "rediss" 6379)) | int) 65535 -}}
{{- fail (printf "faceid-gateway: rateLimit.redis.url names a port above 65535; the gateway would refuse to start.") -}}
{{- end -}}
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
{{- include "faceid-gateway.validateStrategy" . -}}
{{- $rate := add ($v.rateLimit.perSecond | int64) ($v.rateLimit.burst | int64) -}}
{{- $account := $v.rateLimit.accountLimit | int64 -}}
{{- $burstNote := ternary "" (printf " + rateLimit.burst=%d" ($v.rateLimit.burst | int64)) (eq ($v.rateLimit.burst | int64) 0) -}}
{{- if include "faceid-gateway.sharedLimit" . -}}
{{- if gt $rate $account -}}
{{- fail (printf "faceid-gateway: rateLimit.perSecond=%d%s exceeds rateLimit.accountLimit=%d: the replicas share that limit through Redis, and Tencent refuses the calls beyond its limit with RequestLimitExceeded. Lower rateLimit.perSecond (and rateLimit.burst), or raise rateLimit.accountLimit if Tencent raised your account's limit." ($v.rateLimit.perSecond | int64) $burstNote $account) -}}
{{- end -}}
{{- else -}}
{{- /* Without Redis every pod enforces the whole per-replica rate, the surge of a rollout included. */ -}}
{{- $surge := include "faceid-gateway.surge" . | int -}}
{{- $pods := add $max $surge -}}
{{- $replicas := ternary "1 replica" (printf "%d replicas" $max) (eq $max 1) -}}
{{- $podsNote := ternary $replicas (printf "%d pods (%s + maxSurge %d during a rollout)" $pods $replicas $surge) (eq $surge 0) -}}
{{- if and (or (gt $pods 1) $v.autoscaling.enabled) (not $v.rateLimit.perReplica) -}}
{{- fail (printf "faceid-gateway: refusing to run %s (replicaCount > 1, autoscaling.enabled or a strategy with maxSurge) without a shared rate limit. Tencent allows %d CheckIdCardInformation calls per second per account (rateLimit.accountLimit) in total, and each pod would enforce rateLimit.perSecond=%d on its own, so together they would exceed it and calls would fail with RequestLimitExceeded. Either set rateLimit.redis.url (or rateLimit.redis.existingSecret) so all replicas share one limit, or divide the limit yourself and set rateLimit.perReplica=true with rateLimit.perSecond <= accountLimit / max pods (or a strategy with maxSurge 0)." $podsNote $account ($v.rateLimit.perSecond | int64)) -}}
{{- end -}}
{{- if gt (mul $pods $rate) $account -}}
{{- $most := max 0 (sub (div $account $pods) ($v.rateLimit.burst | int64)) -}}
{{- fail (printf "faceid-gateway: rateLimit.perSecond=%d%s x %s = %d exceeds rateLimit.accountLimit=%d. Lower rateLimit.perSecond to at most %d%s, or use rateLimit.redis." ($v.rateLimit.perSecond | int64) $burstNote $podsNote (mul $pods $rate) $account $most (ternary "" ", or set a strategy with maxSurge 0" (eq $surge 0))) -}}
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
{{- if and $v.otel.endpoint (eq $v.otel.protocol "grpc") (hasPrefix "https://" $v.otel.endpoint) -}}
{{- fail "faceid-gateway: otel.protocol=grpc with an https:// otel.endpoint: the gateway exports OTLP over gRPC without TLS only, and would refuse to start. Use otel.protocol=http/protobuf for an https:// collector, or a plaintext http:// gRPC endpoint (e.g. a collector in the cluster)." -}}
{{- end -}}
{{- if and $c.roleArn (not .Values.simulate) -}}
{{- $roleMs := include "faceid-gateway.prometheusMs" $c.roleDuration | int64 -}}
{{- if or (lt $roleMs 1000) (gt $roleMs 43200000) -}}
{{- fail (printf "faceid-gateway: credentials.roleDuration=%s: STS issues a role's keys for 1s to 12h; the gateway would refuse to start. Use e.g. 2h." $c.roleDuration) -}}
{{- end -}}
{{- end -}}
{{- if not $v.image.repository -}}
{{- fail "faceid-gateway: set image.repository to the registry you pushed the gateway's image to (docker build -t registry.example.com/faceid-gateway:<tag> . && docker push ...; see the chart README). No image is published, and a bare name would silently pull from Docker Hub." -}}
{{- end -}}
{{- include "faceid-gateway.validateMemory" . -}}
{{- include "faceid-gateway.validateEndpoints" . -}}
{{- include "faceid-gateway.validateExposure" . -}}
{{- include "faceid-gateway.validateExtras" . -}}
{{- end -}}


{{/*
The Deployment's strategy: strategy when set, else RollingUpdate with a surge
pod when the replicas share the limit through Redis (a new pod is ready
before an old one stops) and without one otherwise (no extra pod with a full
per-replica rate of its own).
*/}}
{{- define "faceid-gateway.strategy" -}}
{{- if .Values.strategy -}}
{{- toYaml .Values.strategy -}}
{{- else if include "faceid-gateway.sharedLimit" . -}}
type: RollingUpdate
rollingUpdate:
  maxSurge: 1
  maxUnavailable: 0
{{- else -}}
type: RollingUpdate
rollingUpdate:
  maxSurge: 0
  maxUnavailable: 1
{{- end -}}
{{- end -}}

{{/*
A rolling update's maxSurge or maxUnavailable as a pod count, for `replicas`
pods: a percentage rounds up for maxSurge and down for maxUnavailable, as
the Deployment controller rounds them. Called with (list value replicas up).
*/}}
{{- define "faceid-gateway.podCount" -}}
{{- $value := index . 0 -}}
{{- $replicas := index . 1 | int64 -}}
{{- if kindIs "string" $value -}}
{{- $percent := trimSuffix "%" $value | int64 -}}
{{- if index . 2 -}}
{{- div (add (mul $replicas $percent) 99) 100 -}}
{{- else -}}
{{- div (mul $replicas $percent) 100 -}}
{{- end -}}
{{- else -}}
{{- $value | int64 -}}
{{- end -}}
{{- end -}}

{{/* maxSurge and maxUnavailable of the strategy as pod counts: "surge unavailable" (Recreate: "0 0"; unset: Kubernetes' 25% each). */}}
{{- define "faceid-gateway.rollingCounts" -}}
{{- $strategy := include "faceid-gateway.strategy" . | fromYaml -}}
{{- $max := include "faceid-gateway.maxReplicas" . | int64 -}}
{{- if eq ($strategy.type | default "RollingUpdate") "Recreate" -}}
0 0
{{- else -}}
{{- $rolling := $strategy.rollingUpdate | default dict -}}
{{- $surge := ternary $rolling.maxSurge "25%" (hasKey $rolling "maxSurge") -}}
{{- $unavailable := ternary $rolling.maxUnavailable "25%" (hasKey $rolling "maxUnavailable") -}}
{{- include "faceid-gateway.podCount" (list $surge $max true) }} {{ include "faceid-gateway.podCount" (list $unavailable $max false) -}}
{{- end -}}
{{- end -}}

{{/* Extra pods a rollout runs at once, each with a full per-replica rate. */}}
{{- define "faceid-gateway.surge" -}}
{{- include "faceid-gateway.rollingCounts" . | splitList " " | first -}}
{{- end -}}

{{/* Strategies Kubernetes would refuse, refused at render time with what to change. */}}
{{- define "faceid-gateway.validateStrategy" -}}
{{- $strategy := .Values.strategy | default dict -}}
{{- if and (eq ($strategy.type | default "RollingUpdate") "Recreate") $strategy.rollingUpdate -}}
{{- fail "faceid-gateway: strategy.type=Recreate takes no strategy.rollingUpdate; remove it, or use type RollingUpdate." -}}
{{- end -}}
{{- $counts := include "faceid-gateway.rollingCounts" . | splitList " " -}}
{{- if and (ne ($strategy.type | default "RollingUpdate") "Recreate") (eq (index $counts 0) "0") (eq (index $counts 1) "0") -}}
{{- fail "faceid-gateway: strategy.rollingUpdate.maxSurge and maxUnavailable are both 0, so a rollout could never start; allow one of them at least 1 (maxSurge: 0 with maxUnavailable: 1 runs no extra pod)." -}}
{{- end -}}
{{- end -}}

{{/*
Memory. A call holds up to 1.5 times the largest image Tencent accepts
(BENCHMARKS.md section 3 measures 1.33 to 1.5 times the image per call in
flight); that image is 5,505,024 bytes (MAX_IMAGE_BYTES in
src/tencent/image.rs: 7 MiB of base64), so 8,257,536 bytes = 8064 KiB. The
process needs 64 MiB besides (26 MiB idle, 30 MiB of buffers at any load).
Unset settings count with the binary's defaults.
*/}}
{{- define "faceid-gateway.memory.callKiB" -}}8064{{- end -}}
{{- define "faceid-gateway.memory.baseKiB" -}}65536{{- end -}}

{{/* Calls a pod holds at once: "calls unary-bound" (see values.yaml, resources). */}}
{{- define "faceid-gateway.memory.calls" -}}
{{- $c := .Values.connections -}}
{{- $connections := 10000 -}}
{{- if not (kindIs "invalid" $c.maxConnections) -}}
{{- $connections = $c.maxConnections | int64 -}}
{{- end -}}
{{- $streams := 256 -}}
{{- if not (kindIs "invalid" $c.maxConcurrentStreams) -}}
{{- $streams = $c.maxConcurrentStreams | int64 -}}
{{- end -}}
{{- $unary := min (.Values.config.maxInFlight | int64) (mul $connections $streams) -}}
{{- add $unary (.Values.config.batchGlobalConcurrency | int64) }} {{ mul $connections $streams -}}
{{- end -}}

{{/* KiB of the idempotency cache each pod keeps (none with Redis, which keeps the answers). */}}
{{- define "faceid-gateway.memory.cacheKiB" -}}
{{- if include "faceid-gateway.sharedLimit" . -}}
0
{{- else if kindIs "invalid" .Values.spend.idempotencyCacheSize -}}
262144
{{- else -}}
{{- div (add (.Values.spend.idempotencyCacheSize | int64) 1023) 1024 -}}
{{- end -}}
{{- end -}}

{{/* MiB a pod needs at most: base + cache + calls x 1.5 x the largest image, rounded up. */}}
{{- define "faceid-gateway.memory.needMiB" -}}
{{- $calls := include "faceid-gateway.memory.calls" . | splitList " " | first | int64 -}}
{{- $kib := add (include "faceid-gateway.memory.baseKiB" . | int64) (include "faceid-gateway.memory.cacheKiB" . | int64) (mul $calls (include "faceid-gateway.memory.callKiB" . | int64)) -}}
{{- div (add $kib 1023) 1024 -}}
{{- end -}}

{{/* MiB a pod holds at rest: base + cache. */}}
{{- define "faceid-gateway.memory.restMiB" -}}
{{- $kib := add (include "faceid-gateway.memory.baseKiB" . | int64) (include "faceid-gateway.memory.cacheKiB" . | int64) -}}
{{- div (add $kib 1023) 1024 -}}
{{- end -}}

{{/* Bytes of a Kubernetes quantity as the schema accepts it (a number, or digits with an optional fraction and suffix). */}}
{{- define "faceid-gateway.quantityBytes" -}}
{{- if or (kindIs "float64" .) (kindIs "int64" .) (kindIs "int" .) -}}
{{- . | float64 | ceil | int64 -}}
{{- else -}}
{{- $number := regexReplaceAll "[^0-9.].*$" . "" -}}
{{- $suffix := trimPrefix $number . -}}
{{- $factors := dict "" 1.0 "m" 0.001 "k" 1000.0 "M" 1000000.0 "G" 1000000000.0 "T" 1000000000000.0 "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 -}}
{{- mulf ($number | float64) (get $factors $suffix) | ceil | int64 -}}
{{- end -}}
{{- end -}}

{{/* A resources value that is set (not missing, null or empty). */}}
{{- define "faceid-gateway.isSet" -}}
{{- if and (not (kindIs "invalid" .)) (ne (toString .) "") -}}
true
{{- end -}}
{{- end -}}

{{/*
The container's resources: resources as given, with limits.memory and
requests.memory derived when unset (see values.yaml): the limit holds the
calls a pod may hold at once, the request what it holds at rest. Neither
derived value contradicts one that is set.
*/}}
{{- define "faceid-gateway.resources" -}}
{{- $resources := deepCopy (.Values.resources | default dict) -}}
{{- $limits := deepCopy ($resources.limits | default dict) -}}
{{- $requests := deepCopy ($resources.requests | default dict) -}}
{{- $mib := 1048576 -}}
{{- $need := include "faceid-gateway.memory.needMiB" . | int64 -}}
{{- $rest := include "faceid-gateway.memory.restMiB" . | int64 -}}
{{- $limitSet := include "faceid-gateway.isSet" (get $limits "memory") -}}
{{- $requestSet := include "faceid-gateway.isSet" (get $requests "memory") -}}
{{- if not $limitSet -}}
{{- $limit := $need -}}
{{- if $requestSet -}}
{{- $limit = max $need (div (add (include "faceid-gateway.quantityBytes" $requests.memory | int64) (sub $mib 1)) $mib) -}}
{{- end -}}
{{- $_ := set $limits "memory" (printf "%dMi" $limit) -}}
{{- end -}}
{{- if not $requestSet -}}
{{- $limitMiB := div (include "faceid-gateway.quantityBytes" $limits.memory | int64) $mib -}}
{{- $_ := set $requests "memory" (printf "%dMi" (min $rest $limitMiB)) -}}
{{- end -}}
{{- $_ := set $resources "limits" $limits -}}
{{- $_ := set $resources "requests" $requests -}}
{{- toYaml $resources -}}
{{- end -}}

{{/* Refuses a memory limit that cannot hold the calls a pod may hold at once. */}}
{{- define "faceid-gateway.validateMemory" -}}
{{- $limits := (.Values.resources | default dict).limits | default dict -}}
{{- if include "faceid-gateway.isSet" (get $limits "memory") -}}
{{- $need := include "faceid-gateway.memory.needMiB" . | int64 -}}
{{- $limitBytes := include "faceid-gateway.quantityBytes" $limits.memory | int64 -}}
{{- if lt $limitBytes (mul $need 1048576) -}}
{{- $counts := include "faceid-gateway.memory.calls" . | splitList " " -}}
{{- $calls := index $counts 0 | int64 -}}
{{- $cacheKiB := include "faceid-gateway.memory.cacheKiB" . | int64 -}}
{{- $fits := max 0 (div (sub (sub (div $limitBytes 1024) 65536) $cacheKiB) 8064) -}}
{{- $unary := printf "config.maxInFlight=%d" (.Values.config.maxInFlight | int64) -}}
{{- if lt (index $counts 1 | int64) (.Values.config.maxInFlight | int64) -}}
{{- $unary = printf "connections.maxConnections x connections.maxConcurrentStreams=%s" (index $counts 1) -}}
{{- end -}}
{{- fail (printf "faceid-gateway: resources.limits.memory=%v cannot hold the calls a pod may hold at once, and the pod would be OOM-killed under load: %d calls (%s + config.batchGlobalConcurrency=%d) x 7.875 MiB (1.5 x the largest image, 5.25 MiB) + 64 MiB + %d MiB of idempotency cache (spend.idempotencyCacheSize; none with rateLimit.redis) = %d MiB. Raise resources.limits.memory to at least %dMi (or leave it unset and the chart derives it), or lower config.maxInFlight or config.batchGlobalConcurrency: %v holds %d calls." $limits.memory $calls $unary (.Values.config.batchGlobalConcurrency | int64) (div $cacheKiB 1024) $need $need $limits.memory $fits) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The endpoints as the binary compares them (scheme, lower-case host, port
without the scheme's default): the binary refuses to start with one twice.
*/}}
{{- define "faceid-gateway.validateEndpoints" -}}
{{- $endpoint := .Values.config.endpoint -}}
{{- $seen := dict -}}
{{- range $url := ternary $endpoint (list $endpoint) (kindIs "slice" $endpoint) -}}
{{- $origin := lower (trimSuffix "/" $url) -}}
{{- $origin = regexReplaceAll "^(https://.*):443$" $origin "${1}" -}}
{{- $origin = regexReplaceAll "^(http://.*):80$" $origin "${1}" -}}
{{- if hasKey $seen $origin -}}
{{- fail (printf "faceid-gateway: config.endpoint lists %s twice (as %s and %s); the gateway refuses to start with an endpoint listed twice. Remove one." $origin (get $seen $origin) $url) -}}
{{- end -}}
{{- $_ := set $seen $origin $url -}}
{{- end -}}
{{- end -}}

{{/* "true" when the metrics port needs a Service of its own: the main one is exposed outside the cluster. */}}
{{- define "faceid-gateway.separateMetricsService" -}}
{{- if has .Values.service.type (list "NodePort" "LoadBalancer") -}}
true
{{- end -}}
{{- end -}}

{{- define "faceid-gateway.metricsServiceName" -}}
{{- if include "faceid-gateway.separateMetricsService" . -}}
{{- printf "%s-metrics" (include "faceid-gateway.fullname" . | trunc 55 | trimSuffix "-") -}}
{{- else -}}
{{- include "faceid-gateway.fullname" . -}}
{{- end -}}
{{- end -}}

{{- define "faceid-gateway.headlessServiceName" -}}
{{- printf "%s-headless" (include "faceid-gateway.fullname" . | trunc 54 | trimSuffix "-") -}}
{{- end -}}

{{/* Milliseconds of a Prometheus duration (30s, 1m30s, 500ms). */}}
{{- define "faceid-gateway.prometheusMs" -}}
{{- $units := dict "y" 31536000000 "w" 604800000 "d" 86400000 "h" 3600000 "m" 60000 "s" 1000 "ms" 1 -}}
{{- $total := 0 -}}
{{- range regexFindAll "[0-9]+(ms|y|w|d|h|m|s)" (toString .) -1 -}}
{{- $unit := regexReplaceAll "^[0-9]+" . "" -}}
{{- $total = add $total (mul (trimSuffix $unit . | int64) (get $units $unit)) -}}
{{- end -}}
{{- $total -}}
{{- end -}}

{{/* The port of a URL, or the scheme's default (`defaults`: scheme -> port). Called with (list url defaults). */}}
{{- define "faceid-gateway.urlPort" -}}
{{- $url := index . 0 -}}
{{- $port := regexReplaceAll "^[a-z]+://(?:[^@/?#]*@)?(?:\\[[^\\]]*\\]|[^:/?#]*)(?::([0-9]*))?(?:[/?#].*)?$" $url "${1}" -}}
{{- if and $port (ne $port $url) -}}
{{- $port | int -}}
{{- else -}}
{{- get (index . 1) (regexReplaceAll "://.*$" $url "") -}}
{{- end -}}
{{- end -}}

{{/* The Redis egress port: networkPolicy.egress.redis.port, else the port of rateLimit.redis.url (6379 when it names none). */}}
{{- define "faceid-gateway.redisPort" -}}
{{- $port := .Values.networkPolicy.egress.redis.port -}}
{{- if not (kindIs "invalid" $port) -}}
{{- $port | int -}}
{{- else if .Values.rateLimit.redis.url -}}
{{- include "faceid-gateway.urlPort" (list .Values.rateLimit.redis.url (dict "redis" 6379 "rediss" 6379)) -}}
{{- end -}}
{{- end -}}

{{/* The OTLP egress ports: networkPolicy.egress.otel.ports, else the port of otel.endpoint (80 or 443 when it names none), comma-separated. */}}
{{- define "faceid-gateway.otelPorts" -}}
{{- with .Values.networkPolicy.egress.otel.ports -}}
{{- join "," . -}}
{{- else -}}
{{- include "faceid-gateway.urlPort" (list .Values.otel.endpoint (dict "http" 80 "https" 443)) -}}
{{- end -}}
{{- end -}}

{{/* FACEID_MAX_CONNECTION_AGE: the value given, else 5m when calls may go to several pods (so new pods get some), else unset. */}}
{{- define "faceid-gateway.maxConnectionAge" -}}
{{- $age := include "faceid-gateway.optionalSetting" .Values.connections.maxConnectionAge -}}
{{- if $age -}}
{{- $age -}}
{{- else if or .Values.autoscaling.enabled (gt (.Values.replicaCount | int) 1) -}}
5m
{{- end -}}
{{- end -}}

{{/* Services, the PDB, the ServiceMonitor and the NetworkPolicy: values Kubernetes or Prometheus would refuse or that would block operations. */}}
{{- define "faceid-gateway.validateExposure" -}}
{{- $v := .Values -}}
{{- $s := $v.service -}}
{{- $external := has $s.type (list "NodePort" "LoadBalancer") -}}
{{- if and (not (kindIs "invalid" $s.nodePort)) (not $external) -}}
{{- fail (printf "faceid-gateway: service.nodePort=%d needs service.type NodePort or LoadBalancer (it is %s)." ($s.nodePort | int) $s.type) -}}
{{- end -}}
{{- if and $s.externalTrafficPolicy (not $external) -}}
{{- fail (printf "faceid-gateway: service.externalTrafficPolicy=%s needs service.type NodePort or LoadBalancer (it is %s)." $s.externalTrafficPolicy $s.type) -}}
{{- end -}}
{{- if and $s.loadBalancerSourceRanges (ne $s.type "LoadBalancer") -}}
{{- fail (printf "faceid-gateway: service.loadBalancerSourceRanges needs service.type LoadBalancer (it is %s)." $s.type) -}}
{{- end -}}
{{- $pdb := $v.podDisruptionBudget -}}
{{- $min := include "faceid-gateway.minReplicas" . | int64 -}}
{{- if and $pdb.enabled (gt $min 1) -}}
{{- $minAvailable := $pdb.minAvailable -}}
{{- $blocks := false -}}
{{- if kindIs "string" $minAvailable -}}
{{- $blocks = ge (trimSuffix "%" $minAvailable | int64) 100 -}}
{{- else -}}
{{- $blocks = ge ($minAvailable | int64) $min -}}
{{- end -}}
{{- if $blocks -}}
{{- fail (printf "faceid-gateway: podDisruptionBudget.minAvailable=%v with %d pods (replicaCount, or autoscaling.minReplicas) lets no pod be evicted, so every node drain and cluster upgrade would stall. Set it below %d (e.g. %d), or set podDisruptionBudget.enabled=false." $minAvailable $min $min (sub $min 1)) -}}
{{- end -}}
{{- end -}}
{{- $sm := $v.serviceMonitor -}}
{{- if and $sm.enabled (gt (include "faceid-gateway.prometheusMs" $sm.scrapeTimeout | int64) (include "faceid-gateway.prometheusMs" $sm.interval | int64)) -}}
{{- fail (printf "faceid-gateway: serviceMonitor.scrapeTimeout=%s is longer than serviceMonitor.interval=%s; Prometheus refuses such a scrape configuration. Set scrapeTimeout to at most the interval." $sm.scrapeTimeout $sm.interval) -}}
{{- end -}}
{{- $np := $v.networkPolicy -}}
{{- if and $np.enabled $v.rateLimit.redis.existingSecret (kindIs "invalid" $np.egress.redis.port) -}}
{{- fail "faceid-gateway: networkPolicy.enabled with rateLimit.redis.existingSecret needs networkPolicy.egress.redis.port: the Redis URL is in a Secret the chart cannot read, and a wrong port would leave the replicas cut off from Redis, each on its fallback share of the limit. Set it to the URL's port (6379 when the URL names none)." -}}
{{- end -}}
{{- end -}}

{{/* Extra volumes, mounts and containers must not take the names or paths of the chart's own. */}}
{{- define "faceid-gateway.validateExtras" -}}
{{- $v := .Values -}}
{{- $volumes := list "tmp" "credentials" "tls" "auth-tokens" "tencent-public-keys" "redis-ca" "oidc-token" -}}
{{- range $v.extraVolumes -}}
{{- if has .name $volumes -}}
{{- fail (printf "faceid-gateway: extraVolumes has a volume named %s, a name the chart uses (%s); rename it." .name (join ", " $volumes)) -}}
{{- end -}}
{{- end -}}
{{- range $v.extraVolumeMounts -}}
{{- $path := trimSuffix "/" .mountPath -}}
{{- if or (eq $path "/tmp") (eq $path "/etc/faceid-gateway") (hasPrefix "/etc/faceid-gateway/" $path) -}}
{{- fail (printf "faceid-gateway: extraVolumeMounts mounts %s at %s, where the chart mounts its own files (/tmp, /etc/faceid-gateway); choose another path." .name .mountPath) -}}
{{- end -}}
{{- end -}}
{{- range concat ($v.initContainers | default list) ($v.sidecars | default list) -}}
{{- if eq .name "gateway" -}}
{{- fail "faceid-gateway: initContainers and sidecars may not use the name gateway, the gateway container's." -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The gRPC port's appProtocol: service.grpcAppProtocol, else grpc (https with TLS). */}}
{{- define "faceid-gateway.grpcAppProtocol" -}}
{{- .Values.service.grpcAppProtocol | default (ternary "https" "grpc" .Values.tls.enabled) -}}
{{- end -}}
