<?php
/**
 * Helpers shared by verify.php and verify_batch.php, which call faceid-gateway
 * over HTTP/JSON (its gRPC port also answers POST /v1/idcard:verify and
 * POST /v1/idcard:verifyBatch):
 * - read the command line (the same flags as the other examples);
 * - build a VerifyIdCardRequest in the proto3 JSON form (lowerCamelCase names,
 *   bytes as base64) from an image file or an http(s) URL;
 * - turn an answer or a google.rpc.Status JSON into the JSON the other
 *   examples print: .proto field names, the code by name, and the details
 *   (ErrorInfo, BadRequest, RetryInfo, ...) chosen by their "@type".
 */

declare(strict_types=1);

/** google.rpc.Code values by number. */
const CODE_NAMES = [
    0 => 'OK', 1 => 'CANCELLED', 2 => 'UNKNOWN', 3 => 'INVALID_ARGUMENT', 4 => 'DEADLINE_EXCEEDED',
    5 => 'NOT_FOUND', 6 => 'ALREADY_EXISTS', 7 => 'PERMISSION_DENIED', 8 => 'RESOURCE_EXHAUSTED',
    9 => 'FAILED_PRECONDITION', 10 => 'ABORTED', 11 => 'OUT_OF_RANGE', 12 => 'UNIMPLEMENTED',
    13 => 'INTERNAL', 14 => 'UNAVAILABLE', 15 => 'DATA_LOSS', 16 => 'UNAUTHENTICATED',
];

/** The code an HTTP status stands for, when an error has no google.rpc.Status body. */
const HTTP_STATUS_CODES = [
    400 => 'INVALID_ARGUMENT', 401 => 'UNAUTHENTICATED', 403 => 'PERMISSION_DENIED', 404 => 'NOT_FOUND',
    409 => 'ABORTED', 429 => 'RESOURCE_EXHAUSTED', 499 => 'CANCELLED', 500 => 'INTERNAL',
    501 => 'UNIMPLEMENTED', 503 => 'UNAVAILABLE', 504 => 'DEADLINE_EXCEEDED',
];

/** The details the gateway sends, by the key they get in our JSON. */
const DETAIL_KEYS = [
    'type.googleapis.com/google.rpc.ErrorInfo' => 'error_info',
    'type.googleapis.com/google.rpc.BadRequest' => 'bad_request',
    'type.googleapis.com/google.rpc.RetryInfo' => 'retry_info',
    'type.googleapis.com/google.rpc.QuotaFailure' => 'quota_failure',
    'type.googleapis.com/google.rpc.PreconditionFailure' => 'precondition_failure',
];

/** The switches of faceid.v1.Checks, by their .proto names. */
const CHECK_NAMES = ['copy_warn', 'border_check_warn', 'reshoot_warn', 'detect_ps_warn', 'temp_id_warn', 'quality'];

const JSON_OUT = JSON_UNESCAPED_UNICODE | JSON_UNESCAPED_SLASHES | JSON_PRESERVE_ZERO_FRACTION;

function usage_error(string $usage, string $message): never
{
    fwrite(STDERR, "$message\n$usage\n");
    exit(2);
}

/**
 * Reads the flags (before or after the one argument):
 * --target, --token, --deadline, --traceparent, --check (repeatable).
 */
function parse_args(array $argv, string $usage, float $default_deadline): array
{
    $options = ['target' => 'localhost:50051', 'token' => null, 'deadline' => $default_deadline,
        'traceparent' => null, 'checks' => [], 'argument' => null];
    $positional = [];
    for ($i = 1; $i < count($argv); $i++) {
        $arg = $argv[$i];
        if (!str_starts_with($arg, '-') || $arg === '-') {
            $positional[] = $arg;
            continue;
        }
        if ($arg === '-h' || $arg === '--help') {
            echo "$usage\n";
            exit(0);
        }
        [$name, $value] = array_pad(explode('=', ltrim($arg, '-'), 2), 2, null);
        if ($value === null) {
            if (++$i >= count($argv)) {
                usage_error($usage, "$arg needs a value");
            }
            $value = $argv[$i];
        }
        switch ($name) {
            case 'target':
            case 'token':
            case 'traceparent':
                $options[$name] = $value;
                break;
            case 'deadline':
                if (!is_numeric($value) || (float) $value <= 0) {
                    usage_error($usage, "--deadline takes seconds, not $value");
                }
                $options['deadline'] = (float) $value;
                break;
            case 'check':
                if (!in_array($value, CHECK_NAMES, true)) {
                    usage_error($usage, "not a check: $value (one of " . implode(', ', CHECK_NAMES) . ')');
                }
                $options['checks'][] = $value;
                break;
            default:
                usage_error($usage, "unknown flag: $arg");
        }
    }
    if (count($positional) !== 1) {
        usage_error($usage, 'expected exactly one argument');
    }
    $options['argument'] = $positional[0];
    return $options;
}

/** The gateway's base URL: --target is host:port as for gRPC, or a full http(s) URL. */
function base_url(string $target): string
{
    return rtrim(str_contains($target, '://') ? $target : "http://$target", '/');
}

/** A W3C traceparent with a new random trace id. */
function new_traceparent(): string
{
    return sprintf('00-%s-%s-01', bin2hex(random_bytes(16)), bin2hex(random_bytes(8)));
}

/** The request headers both calls send. */
function request_headers(array $options, ?string $traceparent, string $content_type): array
{
    $headers = [
        "Content-Type: $content_type",
        // The deadline, like gRPC's grpc-timeout: the gateway gives up (504) when it passes.
        'x-request-timeout: ' . rtrim(rtrim(sprintf('%.3f', $options['deadline']), '0'), '.'),
        'Expect:', // no "100-continue" round trip before the body
    ];
    if ($options['token'] !== null) {
        $headers[] = "Authorization: Bearer {$options['token']}";
    }
    if ($traceparent !== null) {
        $headers[] = "traceparent: $traceparent";
    }
    return $headers;
}

/**
 * A VerifyIdCardRequest in proto3 JSON for an image path or a URL (the
 * gateway checks the URL). Bytes travel as base64.
 */
function build_request(string $source, array $checks): array
{
    if (str_contains($source, '://')) {
        $request = ['imageUrl' => $source];
    } else {
        $image = @file_get_contents($source);
        if ($image === false) {
            throw new RuntimeException("cannot read $source");
        }
        $request = ['image' => base64_encode($image)];
    }
    if ($checks) {
        $request['checks'] = [];
        foreach ($checks as $name) {
            $request['checks'][lower_camel($name)] = true;
        }
    }
    return $request;
}

function lower_camel(string $name): string
{
    return lcfirst(str_replace('_', '', ucwords($name, '_')));
}

function snake(string $name): string
{
    return strtolower(preg_replace('/(?<=[a-z0-9])([A-Z])/', '_$1', $name));
}

/**
 * Renames the lowerCamelCase fields of a decoded proto3 JSON value to their
 * .proto names (resultCode → result_code), for output like the other
 * examples'. The keys of map fields (ErrorInfo.metadata) are data, kept.
 */
function proto_names(mixed $value, bool $is_map = false): mixed
{
    if (is_array($value)) {
        return array_map(fn ($item) => proto_names($item), $value);
    }
    if (!$value instanceof stdClass) {
        return $value;
    }
    $renamed = new stdClass();
    foreach (get_object_vars($value) as $key => $item) {
        $renamed->{$is_map ? $key : snake((string) $key)} = proto_names($item, !$is_map && $key === 'metadata');
    }
    return $renamed;
}

/** A VerifyIdCardResponse (decoded JSON) with .proto names and the portrait as its size. */
function result_object(stdClass $response): stdClass
{
    $result = proto_names($response);
    $portrait = $result->portrait ?? '';
    unset($result->portrait);
    $result->portrait_bytes = strlen(base64_decode($portrait, true) ?: '');
    return $result;
}

/**
 * A google.rpc.Status (decoded JSON) as its code name, message and each
 * detail it knows by "@type"; others are listed by type.
 */
function status_object(stdClass $status, ?int $http_status = null): stdClass
{
    $code = (int) ($status->code ?? 0); // proto3 JSON leaves out zero values
    $error = new stdClass();
    $error->code = CODE_NAMES[$code] ?? (string) $code;
    $error->message = $status->message ?? '';
    if ($http_status !== null) {
        $error->http_status = $http_status;
    }
    foreach ($status->details ?? [] as $detail) {
        $type = $detail->{'@type'} ?? '';
        $key = DETAIL_KEYS[$type] ?? null;
        if ($key === null) {
            $error->other_details[] = $type;
            continue;
        }
        $fields = clone $detail;
        unset($fields->{'@type'});
        $error->$key = proto_names($fields);
    }
    return $error;
}

/** An error answer: its google.rpc.Status body, or just what the HTTP status says. */
function http_error_object(int $http_status, string $body): stdClass
{
    $status = json_decode($body);
    if ($status instanceof stdClass && isset($status->code)) {
        return status_object($status, $http_status);
    }
    $error = new stdClass();
    $error->code = HTTP_STATUS_CODES[$http_status] ?? 'UNKNOWN';
    $error->message = trim($body) !== '' ? trim($body) : "HTTP $http_status";
    $error->http_status = $http_status;
    return $error;
}

/** A transport failure (no HTTP answer) as an error object. */
function curl_error_object(CurlHandle $curl): stdClass
{
    $error = new stdClass();
    $error->code = curl_errno($curl) === CURLE_OPERATION_TIMEDOUT ? 'DEADLINE_EXCEEDED' : 'UNAVAILABLE';
    $error->message = curl_error($curl);
    return $error;
}

/** A curl handle for a POST to the gateway, collecting the response headers. */
function new_call(string $url, array $options, array $headers, array &$response_headers): CurlHandle
{
    $curl = curl_init($url);
    curl_setopt_array($curl, [
        CURLOPT_POST => true,
        CURLOPT_HTTPHEADER => $headers,
        // A little past the deadline, so that the gateway's own 504 arrives first.
        CURLOPT_TIMEOUT_MS => (int) round(($options['deadline'] + 2) * 1000),
        CURLOPT_CONNECTTIMEOUT_MS => 5000,
        CURLOPT_HEADERFUNCTION => function ($curl, string $line) use (&$response_headers): int {
            if (str_contains($line, ':')) {
                [$name, $value] = explode(':', $line, 2);
                $response_headers[strtolower(trim($name))] = trim($value);
            }
            return strlen($line);
        },
    ]);
    return $curl;
}
