<?php
/**
 * Verify one ID card image with faceid-gateway over HTTP/JSON and print the
 * answer as JSON.
 *
 *     php examples/php/verify.php examples/images/id-card.png
 *     php examples/php/verify.php https://example.com/card.jpg --check copy_warn
 *
 * POSTs the VerifyIdCardRequest to /v1/idcard:verify on the gateway's port.
 * Prints the response (verdict, similarity, card fields, ...) and exits 0
 * when the verification ran, whatever the verdict: only VERDICT_MATCH means
 * "same person, genuine card". On an error it prints {"error": {...}} with the
 * code, the HTTP status and the decoded ErrorInfo / BadRequest / RetryInfo
 * details, and exits 1.
 *
 * Needs php-cli and php-curl (no gRPC extension).
 */

declare(strict_types=1);

require __DIR__ . '/common.php';

const USAGE = 'usage: php verify.php [--target HOST:PORT] [--token T] [--deadline SECONDS]'
    . ' [--traceparent V] [--check NAME]... IMAGE|URL';

function main(array $argv): int
{
    $options = parse_args($argv, USAGE, 30.0);
    try {
        $request = build_request($options['argument'], $options['checks']);
    } catch (RuntimeException $e) {
        usage_error(USAGE, $e->getMessage());
    }

    $response_headers = [];
    $curl = new_call(base_url($options['target']) . '/v1/idcard:verify', $options,
        request_headers($options, $options['traceparent'], 'application/json'), $response_headers);
    curl_setopt_array($curl, [
        CURLOPT_POSTFIELDS => json_encode($request, JSON_UNESCAPED_SLASHES),
        CURLOPT_RETURNTRANSFER => true,
    ]);
    $body = curl_exec($curl);
    $http_status = curl_getinfo($curl, CURLINFO_RESPONSE_CODE);

    if ($body === false) {
        $error = curl_error_object($curl);
    } elseif ($http_status !== 200) {
        $error = http_error_object($http_status, $body);
        if (isset($response_headers['retry-after'])) {
            fwrite(STDERR, "retry-after: {$response_headers['retry-after']}\n");
        }
    } else {
        $response = json_decode($body);
        if (!$response instanceof stdClass) {
            fwrite(STDERR, "the gateway answered 200 with a body that is not a JSON object\n");
            return 1;
        }
        foreach (['x-tencent-request-id', 'traceresponse'] as $name) {
            if (isset($response_headers[$name])) {
                fwrite(STDERR, "$name: {$response_headers[$name]}\n");
            }
        }
        echo json_encode(result_object($response), JSON_OUT | JSON_PRETTY_PRINT), "\n";
        return 0;
    }
    echo json_encode(['error' => $error], JSON_OUT | JSON_PRETTY_PRINT), "\n";
    return 1;
}

exit(main($argv));
