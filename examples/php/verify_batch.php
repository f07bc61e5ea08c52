<?php
/**
 * Stream every PNG/JPEG of a folder through faceid-gateway's batch endpoint
 * over HTTP/JSON.
 *
 *     php examples/php/verify_batch.php examples/images > answers.jsonl
 *
 * POSTs newline-delimited JSON to /v1/idcard:verifyBatch, one
 * {"itemId", "request"} per image, read one at a time as curl sends the body.
 * The answer streams back one JSON line per item as it completes, and ends
 * with a {"summary": {...}} line. Writes one JSON line per image to stdout as
 * its answer arrives: {"item_id", "verdict", ...} or {"item_id", "error": {...}}.
 * Shows progress on stderr and, at the end, the summary's counts as
 * x-batch-received / x-batch-succeeded / x-batch-failed (the trailers' names
 * over gRPC).
 *
 * Exits 0 when every image got an answer (an error answer counts) and the
 * stream ended OK, 1 otherwise. Needs php-cli and php-curl.
 */

declare(strict_types=1);

require __DIR__ . '/common.php';

const USAGE = 'usage: php verify_batch.php [--target HOST:PORT] [--token T] [--deadline SECONDS]'
    . ' [--traceparent V] [--check NAME]... FOLDER';

/** One answer line of the stream as the compact object the other examples print. */
function answer_object(stdClass $answer): stdClass
{
    $line = new stdClass();
    $line->item_id = $answer->itemId ?? '';
    if (isset($answer->error)) {
        $line->error = status_object($answer->error);
        return $line;
    }
    $result = $answer->result ?? new stdClass();
    // Fields at their default value are left out of proto3 JSON.
    $line->verdict = $result->verdict ?? 'VERDICT_UNSPECIFIED';
    $line->similarity = $result->similarity ?? 0.0;
    $line->result_code = $result->resultCode ?? '';
    $line->request_id = $result->requestId ?? '';
    return $line;
}

function show_progress(int $done, int $total, int $width = 30): void
{
    $filled = intdiv($width * $done, $total);
    fwrite(STDERR, sprintf("\r[%s%s] %d/%d", str_repeat('#', $filled), str_repeat('.', $width - $filled), $done, $total));
}

function main(array $argv): int
{
    $options = parse_args($argv, USAGE, 120.0);
    $folder = $options['argument'];
    $paths = [];
    foreach (is_dir($folder) ? scandir($folder) : [] as $name) {
        if (is_file("$folder/$name") && preg_match('/\.(png|jpe?g)$/i', $name)) {
            $paths[] = "$folder/$name";
        }
    }
    if (!$paths) {
        usage_error(USAGE, "no PNG or JPEG file in $folder");
    }
    $traceparent = $options['traceparent'] ?? new_traceparent();

    // The request body: one JSON line per image, made when curl asks for more.
    $next = 0;
    $pending = '';
    $offset = 0;
    $read = function ($curl, $stream, int $length) use (&$next, &$pending, &$offset, $paths, $options): string {
        while ($offset === strlen($pending) && $next < count($paths)) {
            $path = $paths[$next++];
            try {
                $request = build_request($path, $options['checks']);
            } catch (RuntimeException $e) {
                fwrite(STDERR, "\n" . $e->getMessage() . "\n");
                continue;
            }
            $pending = json_encode(['itemId' => basename($path), 'request' => $request], JSON_UNESCAPED_SLASHES) . "\n";
            $offset = 0;
        }
        $chunk = substr($pending, $offset, $length);
        $offset += strlen($chunk);
        return $chunk; // '' ends the body
    };

    // The answer: complete lines are handled as they arrive.
    $answered = [];
    $summary = null;
    $buffer = '';
    $handle_line = function (string $line) use (&$answered, &$summary, $paths): void {
        if (trim($line) === '') {
            return;
        }
        $answer = json_decode($line);
        if (!$answer instanceof stdClass) {
            fwrite(STDERR, "\nnot a JSON object: $line\n");
        } elseif (isset($answer->summary)) {
            $summary = $answer->summary;
        } else {
            $object = answer_object($answer);
            $answered[$object->item_id] = true;
            echo json_encode($object, JSON_OUT), "\n";
            show_progress(count($answered), count($paths));
        }
    };
    $write = function ($curl, string $data) use (&$buffer, $handle_line): int {
        $buffer .= $data;
        if (curl_getinfo($curl, CURLINFO_RESPONSE_CODE) === 200) {
            while (($end = strpos($buffer, "\n")) !== false) {
                $handle_line(substr($buffer, 0, $end));
                $buffer = substr($buffer, $end + 1);
            }
        }
        return strlen($data);
    };

    $response_headers = [];
    $headers = request_headers($options, $traceparent, 'application/x-ndjson');
    $headers[] = 'Accept: application/x-ndjson';
    $headers[] = 'Transfer-Encoding: chunked'; // the body is streamed, its length unknown
    $curl = new_call(base_url($options['target']) . '/v1/idcard:verifyBatch', $options, $headers, $response_headers);
    curl_setopt_array($curl, [CURLOPT_READFUNCTION => $read, CURLOPT_WRITEFUNCTION => $write]);

    show_progress(0, count($paths));
    $ok = curl_exec($curl);
    $http_status = curl_getinfo($curl, CURLINFO_RESPONSE_CODE);

    $stream_error = null;
    if ($http_status === 200) {
        $handle_line($buffer); // a last line without its newline
    }
    if ($ok === false) {
        $stream_error = curl_error_object($curl);
    } elseif ($http_status !== 200) {
        $stream_error = http_error_object($http_status, $buffer);
    } elseif ($summary === null) {
        $stream_error = (object) ['code' => 'UNAVAILABLE', 'message' => 'the answer ended without its summary line'];
    } elseif ((int) ($summary->status->code ?? 0) !== 0) {
        $stream_error = status_object($summary->status);
    }

    fwrite(STDERR, "\ntraceparent: $traceparent\n");
    foreach (['received', 'succeeded', 'failed'] as $count) {
        $value = $summary === null ? '(missing)' : (string) ($summary->$count ?? 0);
        fwrite(STDERR, "x-batch-$count: $value\n");
    }
    if ($stream_error !== null) {
        fwrite(STDERR, "stream ended with {$stream_error->code}: {$stream_error->message}\n");
    }
    $missing = array_values(array_filter(array_map('basename', $paths), fn ($name) => !isset($answered[$name])));
    if ($missing) {
        fwrite(STDERR, sprintf("no answer for %d item(s): %s\n", count($missing), implode(', ', $missing)));
    }
    return $missing || $stream_error !== null ? 1 : 0;
}

exit(main($argv));
