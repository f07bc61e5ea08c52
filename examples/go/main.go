// Command faceid-verify verifies ID card images with faceid-gateway over gRPC
// and prints the answers as JSON.
//
//	faceid-verify [flags] IMAGE|URL          one image or http(s) URL: VerifyIdCard
//	faceid-verify --batch [flags] FOLDER     every PNG/JPEG of a folder: VerifyIdCardBatch
//
// One image: prints the answer (verdict, similarity, card fields, ...) and
// exits 0 when the verification ran, whatever the verdict: only VERDICT_MATCH
// means "same person, genuine card". On a gRPC error it prints
// {"error": {...}} with the code and the decoded google.rpc details
// (ErrorInfo, BadRequest, RetryInfo, QuotaFailure, PreconditionFailure) and
// exits 1.
//
// Batch: writes one JSON line per image as its answer arrives (completion
// order), shows progress on stderr and, at the end, the trailer counts
// x-batch-received / x-batch-succeeded / x-batch-failed. Exits 0 when every
// image got an answer (an error answer counts) and the stream ended OK.
//
// Build it with examples/go/build.sh (see examples/go/README.md).
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	// The stubs build.sh generates from proto/ (the google.rpc detail types
	// register themselves, so details are found by their type URL).
	_ "faceidexample/google/rpc/errdetailspb"
	rpcstatus "faceidexample/google/rpc/statuspb"
	faceidv1 "github.com/faceid-gateway/faceid-gateway/gen/go/faceid/v1"

	rpccode "google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// detailKeys names the google.rpc details the gateway sends, by the key they
// get in our JSON (the same keys as the Python and Node examples).
var detailKeys = map[protoreflect.FullName]string{
	"google.rpc.ErrorInfo":           "error_info",
	"google.rpc.BadRequest":          "bad_request",
	"google.rpc.RetryInfo":           "retry_info",
	"google.rpc.QuotaFailure":        "quota_failure",
	"google.rpc.PreconditionFailure": "precondition_failure",
}

// trailerCounts are the trailers that end a batch stream.
var trailerCounts = []string{"x-batch-received", "x-batch-succeeded", "x-batch-failed"}

// protoCodec encodes messages with google.golang.org/protobuf. Debian's
// grpc-go 1.33 encodes through golang/protobuf 1.3 by default, which predates
// the stubs protoc-gen-go 1.28 writes (it cannot encode their oneofs).
type protoCodec struct{}

func (protoCodec) Marshal(v interface{}) ([]byte, error) { return proto.Marshal(v.(proto.Message)) }
func (protoCodec) Unmarshal(data []byte, v interface{}) error {
	return proto.Unmarshal(data, v.(proto.Message))
}
func (protoCodec) Name() string { return "proto" }

type options struct {
	target      string
	token       string
	traceparent string
	deadline    time.Duration
	batch       bool
	checks      []string
}

// checkList is the repeatable --check flag; it accepts the fields of faceid.v1.Checks.
type checkList struct{ names *[]string }

func (c checkList) String() string { return "" }
func (c checkList) Set(name string) error {
	if checkField(name) == nil {
		return fmt.Errorf("not a check: %s (one of %s)", name, strings.Join(checkNames(), ", "))
	}
	*c.names = append(*c.names, name)
	return nil
}

func checkField(name string) protoreflect.FieldDescriptor {
	return (&faceidv1.Checks{}).ProtoReflect().Descriptor().Fields().ByName(protoreflect.Name(name))
}

func checkNames() []string {
	fields := (&faceidv1.Checks{}).ProtoReflect().Descriptor().Fields()
	names := make([]string, fields.Len())
	for i := range names {
		names[i] = string(fields.Get(i).Name())
	}
	return names
}

// parseArgs reads the flags and the one positional argument; flags may come
// before or after it (Go's flag package alone stops at the first argument).
func parseArgs(args []string) (options, string, error) {
	var opts options
	var seconds float64
	flags := flag.NewFlagSet("faceid-verify", flag.ContinueOnError)
	flags.Usage = func() {
		fmt.Fprintf(flags.Output(), "usage: faceid-verify [flags] IMAGE|URL\n       faceid-verify --batch [flags] FOLDER\n")
		flags.PrintDefaults()
	}
	flags.StringVar(&opts.target, "target", "localhost:50051", "gateway address (plaintext gRPC)")
	flags.StringVar(&opts.token, "token", "", "caller token, sent as `authorization: Bearer <token>`")
	flags.StringVar(&opts.traceparent, "traceparent", "", "W3C trace context to send (batch default: a new random trace)")
	flags.Float64Var(&seconds, "deadline", 0, "deadline of the call in seconds (default 30, batch 120)")
	flags.BoolVar(&opts.batch, "batch", false, "verify every PNG/JPEG of FOLDER in one VerifyIdCardBatch stream")
	flags.Var(checkList{&opts.checks}, "check", "switch on a forgery/quality check (repeatable): "+strings.Join(checkNames(), ", "))

	var positional []string
	for {
		if err := flags.Parse(args); err != nil {
			return opts, "", err
		}
		if flags.NArg() == 0 {
			break
		}
		positional = append(positional, flags.Arg(0))
		args = flags.Args()[1:]
	}
	if len(positional) != 1 {
		flags.Usage()
		return opts, "", errors.New("expected exactly one IMAGE, URL or FOLDER")
	}
	switch {
	case seconds > 0:
		opts.deadline = time.Duration(seconds * float64(time.Second))
	case opts.batch:
		opts.deadline = 120 * time.Second
	default:
		opts.deadline = 30 * time.Second
	}
	return opts, positional[0], nil
}

// buildRequest makes a VerifyIdCardRequest for an image path or a URL (the
// gateway checks the URL).
func buildRequest(source string, checks []string) (*faceidv1.VerifyIdCardRequest, error) {
	request := &faceidv1.VerifyIdCardRequest{}
	if strings.Contains(source, "://") {
		request.Source = &faceidv1.VerifyIdCardRequest_ImageUrl{ImageUrl: source}
	} else {
		image, err := os.ReadFile(source)
		if err != nil {
			return nil, err
		}
		request.Source = &faceidv1.VerifyIdCardRequest_Image{Image: image}
	}
	if len(checks) > 0 {
		request.Checks = &faceidv1.Checks{}
		for _, name := range checks {
			request.Checks.ProtoReflect().Set(checkField(name), protoreflect.ValueOfBool(true))
		}
	}
	return request, nil
}

// messageObject is a message in the proto3 JSON form with the .proto field
// names (e.g. retry_delay: "1s"), as a value encoding/json can nest.
func messageObject(message proto.Message) (map[string]any, error) {
	text, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(message)
	if err != nil {
		return nil, err
	}
	decoder := json.NewDecoder(bytes.NewReader(text))
	decoder.UseNumber()
	var object map[string]any
	err = decoder.Decode(&object)
	return object, err
}

// resultObject is a VerifyIdCardResponse with the portrait replaced by its size.
func resultObject(response *faceidv1.VerifyIdCardResponse) (map[string]any, error) {
	shown := proto.Clone(response).(*faceidv1.VerifyIdCardResponse)
	shown.Portrait = nil
	object, err := messageObject(shown)
	if err != nil {
		return nil, err
	}
	object["portrait_bytes"] = len(response.Portrait)
	return object, nil
}

// detail is one packed google.protobuf.Any: grpc-go hands the details of an
// RPC error over as golang/protobuf 1.3 values, batch items as ours.
type detail struct {
	typeURL string
	value   []byte
}

// statusObject is a google.rpc.Status as its code name, message and each
// detail it knows, decoded; others are listed by type URL.
func statusObject(code int32, message string, details []detail) map[string]any {
	name, ok := rpccode.Code_name[code]
	if !ok {
		name = fmt.Sprint(code)
	}
	object := map[string]any{"code": name, "message": message}
	var others []string
	for _, d := range details {
		messageType, err := protoregistry.GlobalTypes.FindMessageByURL(d.typeURL)
		key, known := "", false
		if err == nil {
			key, known = detailKeys[messageType.Descriptor().FullName()]
		}
		if !known {
			others = append(others, d.typeURL)
			continue
		}
		decoded := messageType.New().Interface()
		if err := proto.Unmarshal(d.value, decoded); err != nil {
			others = append(others, d.typeURL)
			continue
		}
		if value, err := messageObject(decoded); err == nil {
			object[key] = value
		}
	}
	if len(others) > 0 {
		object["other_details"] = others
	}
	return object
}

// rpcErrorObject is an RPC error with the details of `grpc-status-details-bin`.
func rpcErrorObject(err error) map[string]any {
	st := status.Convert(err)
	var details []detail
	for _, packed := range st.Proto().GetDetails() {
		details = append(details, detail{packed.GetTypeUrl(), packed.GetValue()})
	}
	return statusObject(int32(st.Code()), st.Message(), details)
}

// batchStatusObject is the error of a batch item (a google.rpc.Status field).
func batchStatusObject(st *rpcstatus.Status) map[string]any {
	var details []detail
	for _, packed := range st.GetDetails() {
		details = append(details, detail{packed.GetTypeUrl(), packed.GetValue()})
	}
	return statusObject(st.GetCode(), st.GetMessage(), details)
}

func printJSON(value any, indent bool) {
	encoder := json.NewEncoder(os.Stdout)
	encoder.SetEscapeHTML(false)
	if indent {
		encoder.SetIndent("", "  ")
	}
	if err := encoder.Encode(value); err != nil {
		fmt.Fprintln(os.Stderr, "faceid-verify:", err)
	}
}

func newTraceparent() string {
	ids := make([]byte, 24)
	if _, err := rand.Read(ids); err != nil {
		panic(err)
	}
	return fmt.Sprintf("00-%s-%s-01", hex.EncodeToString(ids[:16]), hex.EncodeToString(ids[16:]))
}

// callContext carries the deadline and the request metadata.
func callContext(opts options, traceparent string) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), opts.deadline)
	md := metadata.MD{}
	if opts.token != "" {
		md.Set("authorization", "Bearer "+opts.token)
	}
	if traceparent != "" {
		md.Set("traceparent", traceparent)
	}
	return metadata.NewOutgoingContext(ctx, md), cancel
}

func verifyOne(client faceidv1.IdCardVerificationServiceClient, opts options, source string) int {
	request, err := buildRequest(source, opts.checks)
	if err != nil {
		fmt.Fprintln(os.Stderr, "faceid-verify:", err)
		return 2
	}
	ctx, cancel := callContext(opts, opts.traceparent)
	defer cancel()
	var header metadata.MD
	response, err := client.VerifyIdCard(ctx, request, grpc.Header(&header))
	if err != nil {
		printJSON(map[string]any{"error": rpcErrorObject(err)}, true)
		return 1
	}
	for _, key := range []string{"x-tencent-request-id", "traceresponse"} {
		if values := header.Get(key); len(values) > 0 {
			fmt.Fprintf(os.Stderr, "%s: %s\n", key, values[0])
		}
	}
	object, err := resultObject(response)
	if err != nil {
		fmt.Fprintln(os.Stderr, "faceid-verify:", err)
		return 1
	}
	printJSON(object, true)
	return 0
}

func imagesIn(folder string) ([]string, error) {
	entries, err := os.ReadDir(folder)
	if err != nil {
		return nil, err
	}
	var paths []string
	for _, entry := range entries {
		switch strings.ToLower(filepath.Ext(entry.Name())) {
		case ".png", ".jpg", ".jpeg":
			if entry.Type().IsRegular() {
				paths = append(paths, filepath.Join(folder, entry.Name()))
			}
		}
	}
	sort.Strings(paths)
	return paths, nil
}

// resultLine and errorLine are the two shapes of a batch answer line.
type resultLine struct {
	ItemID     string  `json:"item_id"`
	Verdict    string  `json:"verdict"`
	Similarity float64 `json:"similarity"`
	ResultCode string  `json:"result_code"`
	RequestID  string  `json:"request_id"`
}

type errorLine struct {
	ItemID string         `json:"item_id"`
	Error  map[string]any `json:"error"`
}

// answerLine is one batch answer as a compact object.
func answerLine(answer *faceidv1.VerifyIdCardBatchResponse) any {
	if st := answer.GetError(); st != nil {
		return errorLine{answer.GetItemId(), batchStatusObject(st)}
	}
	result := answer.GetResult()
	return resultLine{
		ItemID:     answer.GetItemId(),
		Verdict:    result.GetVerdict().String(),
		Similarity: result.GetSimilarity(),
		ResultCode: result.GetResultCode(),
		RequestID:  result.GetRequestId(),
	}
}

func showProgress(done, total int) {
	const width = 30
	filled := width * done / total
	fmt.Fprintf(os.Stderr, "\r[%s%s] %d/%d", strings.Repeat("#", filled), strings.Repeat(".", width-filled), done, total)
}

func verifyBatch(client faceidv1.IdCardVerificationServiceClient, opts options, folder string) int {
	paths, err := imagesIn(folder)
	if err == nil && len(paths) == 0 {
		err = fmt.Errorf("no PNG or JPEG file in %s", folder)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "faceid-verify:", err)
		return 2
	}
	traceparent := opts.traceparent
	if traceparent == "" {
		traceparent = newTraceparent()
	}
	ctx, cancel := callContext(opts, traceparent)
	defer cancel()

	answered := map[string]bool{}
	var streamErr error
	var trailers metadata.MD
	showProgress(0, len(paths))
	stream, err := client.VerifyIdCardBatch(ctx)
	if err != nil {
		streamErr = err
	} else {
		// Images are read one at a time, as flow control lets them go.
		go func() {
			for _, path := range paths {
				request, err := buildRequest(path, opts.checks)
				if err != nil {
					fmt.Fprintln(os.Stderr, "\nfaceid-verify:", err)
					continue
				}
				item := &faceidv1.VerifyIdCardBatchRequest{ItemId: filepath.Base(path), Request: request}
				if stream.Send(item) != nil {
					return // the stream is over; Recv says why
				}
			}
			_ = stream.CloseSend()
		}()
		for {
			answer, err := stream.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				streamErr = err
				break
			}
			answered[answer.GetItemId()] = true
			printJSON(answerLine(answer), false)
			showProgress(len(answered), len(paths))
		}
		trailers = stream.Trailer()
	}

	fmt.Fprintln(os.Stderr)
	fmt.Fprintf(os.Stderr, "traceparent: %s\n", traceparent)
	for _, key := range trailerCounts {
		value := "(missing)"
		if values := trailers.Get(key); len(values) > 0 {
			value = values[0]
		}
		fmt.Fprintf(os.Stderr, "%s: %s\n", key, value)
	}
	if streamErr != nil {
		object := rpcErrorObject(streamErr)
		fmt.Fprintf(os.Stderr, "stream ended with %s: %s\n", object["code"], object["message"])
	}
	var missing []string
	for _, path := range paths {
		if !answered[filepath.Base(path)] {
			missing = append(missing, filepath.Base(path))
		}
	}
	if len(missing) > 0 {
		fmt.Fprintf(os.Stderr, "no answer for %d item(s): %s\n", len(missing), strings.Join(missing, ", "))
	}
	if streamErr != nil || len(missing) > 0 {
		return 1
	}
	return 0
}

func main() {
	opts, source, err := parseArgs(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "faceid-verify:", err)
		os.Exit(2)
	}
	conn, err := grpc.Dial(opts.target, grpc.WithInsecure(),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(protoCodec{})))
	if err != nil {
		fmt.Fprintln(os.Stderr, "faceid-verify:", err)
		os.Exit(1)
	}
	defer conn.Close()
	client := faceidv1.NewIdCardVerificationServiceClient(conn)
	code := 0
	if opts.batch {
		code = verifyBatch(client, opts, source)
	} else {
		code = verifyOne(client, opts, source)
	}
	conn.Close()
	os.Exit(code)
}
