import com.faceidgateway.faceid.v1.Checks;
import com.faceidgateway.faceid.v1.IdCardVerificationServiceGrpc;
import com.faceidgateway.faceid.v1.VerifyIdCardBatchRequest;
import com.faceidgateway.faceid.v1.VerifyIdCardBatchResponse;
import com.faceidgateway.faceid.v1.VerifyIdCardRequest;
import com.faceidgateway.faceid.v1.VerifyIdCardResponse;
import com.google.gson.Gson;
import com.google.gson.GsonBuilder;
import com.google.gson.JsonArray;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import com.google.protobuf.Any;
import com.google.protobuf.ByteString;
import com.google.protobuf.Descriptors.FieldDescriptor;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.protobuf.Message;
import com.google.protobuf.util.JsonFormat;
import com.google.rpc.BadRequest;
import com.google.rpc.ErrorInfo;
import com.google.rpc.PreconditionFailure;
import com.google.rpc.QuotaFailure;
import com.google.rpc.RetryInfo;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.Metadata;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.protobuf.StatusProto;
import io.grpc.stub.ClientCallStreamObserver;
import io.grpc.stub.ClientResponseObserver;
import io.grpc.stub.MetadataUtils;
import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import java.util.stream.Collectors;
import java.util.stream.Stream;

/**
 * Verifies ID card images with faceid-gateway over gRPC and prints the answers as JSON.
 *
 * <pre>
 *   faceid-verify [flags] IMAGE|URL          one image or http(s) URL: VerifyIdCard
 *   faceid-verify --batch [flags] FOLDER     every PNG/JPEG of a folder: VerifyIdCardBatch
 * </pre>
 *
 * <p>One image: prints the answer and exits 0 when the verification ran, whatever the verdict
 * (only VERDICT_MATCH means "same person, genuine card"); on a gRPC error prints {"error": {...}}
 * with the code and the decoded google.rpc details, and exits 1.
 *
 * <p>Batch: one JSON line per image as its answer arrives, progress on stderr, then the trailer
 * counts x-batch-received / -succeeded / -failed. Exits 0 when every image got an answer (an
 * error answer counts) and the stream ended OK.
 *
 * <p>Build and run: see examples/java/README.md.
 */
public final class FaceidVerify {
  private static final String USAGE =
      "usage: faceid-verify [--target HOST:PORT] [--token T] [--deadline SECONDS]"
          + " [--traceparent V] [--check NAME]... IMAGE|URL\n"
          + "       faceid-verify --batch [same flags] FOLDER";

  /** The google.rpc details the gateway sends, by the key they get in our JSON. */
  private static final Map<Class<? extends Message>, String> DETAIL_KEYS = new LinkedHashMap<>();

  static {
    DETAIL_KEYS.put(ErrorInfo.class, "error_info");
    DETAIL_KEYS.put(BadRequest.class, "bad_request");
    DETAIL_KEYS.put(RetryInfo.class, "retry_info");
    DETAIL_KEYS.put(QuotaFailure.class, "quota_failure");
    DETAIL_KEYS.put(PreconditionFailure.class, "precondition_failure");
  }

  private static final List<String> TRAILER_COUNTS =
      List.of("x-batch-received", "x-batch-succeeded", "x-batch-failed");

  /** Answers go to stdout as UTF-8 whatever the locale (card fields are Chinese). */
  private static final PrintStream OUT =
      new PrintStream(new FileOutputStream(FileDescriptor.out), true, StandardCharsets.UTF_8);

  private static final Gson PRETTY = new GsonBuilder().setPrettyPrinting().disableHtmlEscaping().create();
  private static final Gson COMPACT = new GsonBuilder().disableHtmlEscaping().create();
  private static final JsonFormat.Printer PROTO_JSON =
      JsonFormat.printer().preservingProtoFieldNames().omittingInsignificantWhitespace();

  /** The command line. */
  private static final class Options {
    String target = "localhost:50051";
    String token;
    String traceparent;
    double deadlineSeconds;
    boolean batch;
    final List<String> checks = new ArrayList<>();
    String source;
  }

  private static final class UsageException extends Exception {
    UsageException(String message) {
      super(message);
    }
  }

  private FaceidVerify() {}

  public static void main(String[] args) throws InterruptedException {
    Options options;
    try {
      options = parse(args);
    } catch (UsageException e) {
      System.err.println("faceid-verify: " + e.getMessage());
      System.err.println(USAGE);
      System.exit(2);
      return;
    }
    if (options.deadlineSeconds <= 0) {
      options.deadlineSeconds = options.batch ? 120 : 30;
    }
    ManagedChannel channel = ManagedChannelBuilder.forTarget(options.target).usePlaintext().build();
    int code;
    try {
      code = options.batch ? verifyBatch(channel, options) : verifyOne(channel, options);
    } finally {
      channel.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }
    System.exit(code);
  }

  private static Options parse(String[] args) throws UsageException {
    Options options = new Options();
    List<String> positional = new ArrayList<>();
    for (int i = 0; i < args.length; i++) {
      String arg = args[i];
      if (!arg.startsWith("-") || arg.equals("-")) {
        positional.add(arg);
        continue;
      }
      String name = arg.replaceFirst("^--?", "");
      String value = null;
      int equals = name.indexOf('=');
      if (equals >= 0) {
        value = name.substring(equals + 1);
        name = name.substring(0, equals);
      }
      if (name.equals("batch")) {
        options.batch = true;
        continue;
      }
      if (name.equals("h") || name.equals("help")) {
        System.out.println(USAGE);
        System.exit(0);
      }
      if (value == null) {
        if (++i == args.length) {
          throw new UsageException("flag needs a value: " + arg);
        }
        value = args[i];
      }
      switch (name) {
        case "target" -> options.target = value;
        case "token" -> options.token = value;
        case "traceparent" -> options.traceparent = value;
        case "deadline" -> {
          try {
            options.deadlineSeconds = Double.parseDouble(value);
          } catch (NumberFormatException e) {
            throw new UsageException("--deadline takes seconds, not " + value);
          }
        }
        case "check" -> {
          if (Checks.getDescriptor().findFieldByName(value) == null) {
            throw new UsageException("not a check: " + value + " (one of " + String.join(", ", checkNames()) + ")");
          }
          options.checks.add(value);
        }
        default -> throw new UsageException("unknown flag: " + arg);
      }
    }
    if (positional.size() != 1) {
      throw new UsageException("expected exactly one IMAGE, URL or FOLDER");
    }
    options.source = positional.get(0);
    return options;
  }

  private static List<String> checkNames() {
    return Checks.getDescriptor().getFields().stream().map(FieldDescriptor::getName).toList();
  }

  /** A VerifyIdCardRequest for an image path or a URL (the gateway checks the URL). */
  private static VerifyIdCardRequest buildRequest(String source, List<String> checks) throws IOException {
    VerifyIdCardRequest.Builder request = VerifyIdCardRequest.newBuilder();
    if (source.contains("://")) {
      request.setImageUrl(source);
    } else {
      request.setImage(ByteString.copyFrom(Files.readAllBytes(Path.of(source))));
    }
    if (!checks.isEmpty()) {
      Checks.Builder builder = Checks.newBuilder();
      for (String name : checks) {
        builder.setField(Checks.getDescriptor().findFieldByName(name), true);
      }
      request.setChecks(builder);
    }
    return request.build();
  }

  /** Metadata every call sends: the caller token and the trace context, when given. */
  private static Metadata requestHeaders(Options options, String traceparent) {
    Metadata headers = new Metadata();
    if (options.token != null) {
      headers.put(key("authorization"), "Bearer " + options.token);
    }
    if (traceparent != null) {
      headers.put(key("traceparent"), traceparent);
    }
    return headers;
  }

  private static Metadata.Key<String> key(String name) {
    return Metadata.Key.of(name, Metadata.ASCII_STRING_MARSHALLER);
  }

  /** A message in the proto3 JSON form with the .proto field names (e.g. retry_delay: "1s"). */
  private static JsonObject messageObject(Message message) {
    try {
      return JsonParser.parseString(PROTO_JSON.print(message)).getAsJsonObject();
    } catch (InvalidProtocolBufferException e) {
      throw new IllegalStateException(e);
    }
  }

  /** A VerifyIdCardResponse with the portrait replaced by its size. */
  private static JsonObject resultObject(VerifyIdCardResponse response) {
    JsonObject object = messageObject(response.toBuilder().clearPortrait().build());
    object.addProperty("portrait_bytes", response.getPortrait().size());
    return object;
  }

  /** A google.rpc.Status as its code name, message and each detail it knows, decoded. */
  private static JsonObject statusObject(com.google.rpc.Status status) {
    JsonObject error = new JsonObject();
    error.addProperty("code", Status.fromCodeValue(status.getCode()).getCode().name());
    error.addProperty("message", status.getMessage());
    JsonArray others = new JsonArray();
    for (Any detail : status.getDetailsList()) {
      String key = null;
      for (Map.Entry<Class<? extends Message>, String> known : DETAIL_KEYS.entrySet()) {
        if (detail.is(known.getKey())) {
          try {
            error.add(known.getValue(), messageObject(detail.unpack(known.getKey())));
            key = known.getValue();
          } catch (InvalidProtocolBufferException e) {
            // listed below as an unknown detail
          }
          break;
        }
      }
      if (key == null) {
        others.add(detail.getTypeUrl());
      }
    }
    if (!others.isEmpty()) {
      error.add("other_details", others);
    }
    return error;
  }

  /** An RPC error with the details of `grpc-status-details-bin`, or just its code and message. */
  private static JsonObject rpcErrorObject(Throwable failure) {
    com.google.rpc.Status status = StatusProto.fromThrowable(failure);
    if (status == null) {
      Status plain = Status.fromThrowable(failure);
      status =
          com.google.rpc.Status.newBuilder()
              .setCode(plain.getCode().value())
              .setMessage(plain.getDescription() == null ? "" : plain.getDescription())
              .build();
    }
    return statusObject(status);
  }

  private static int verifyOne(ManagedChannel channel, Options options) {
    VerifyIdCardRequest request;
    try {
      request = buildRequest(options.source, options.checks);
    } catch (IOException e) {
      System.err.println("faceid-verify: cannot read " + options.source + ": " + e);
      return 2;
    }
    AtomicReference<Metadata> headers = new AtomicReference<>();
    AtomicReference<Metadata> trailers = new AtomicReference<>();
    IdCardVerificationServiceGrpc.IdCardVerificationServiceBlockingStub stub =
        IdCardVerificationServiceGrpc.newBlockingStub(channel)
            .withInterceptors(
                MetadataUtils.newAttachHeadersInterceptor(requestHeaders(options, options.traceparent)),
                MetadataUtils.newCaptureMetadataInterceptor(headers, trailers))
            .withDeadlineAfter(Math.round(options.deadlineSeconds * 1000), TimeUnit.MILLISECONDS);
    VerifyIdCardResponse response;
    try {
      response = stub.verifyIdCard(request);
    } catch (StatusRuntimeException e) {
      JsonObject wrapped = new JsonObject();
      wrapped.add("error", rpcErrorObject(e));
      OUT.println(PRETTY.toJson(wrapped));
      return 1;
    }
    if (headers.get() != null) {
      for (String name : List.of("x-tencent-request-id", "traceresponse")) {
        String value = headers.get().get(key(name));
        if (value != null) {
          System.err.println(name + ": " + value);
        }
      }
    }
    OUT.println(PRETTY.toJson(resultObject(response)));
    return 0;
  }

  private static List<Path> imagesIn(Path folder) throws IOException {
    try (Stream<Path> entries = Files.list(folder)) {
      return entries
          .filter(Files::isRegularFile)
          .filter(p -> p.getFileName().toString().toLowerCase(Locale.ROOT).matches(".*\\.(png|jpe?g)"))
          .sorted()
          .collect(Collectors.toList());
    }
  }

  /** One batch answer as a compact object. */
  private static JsonObject answerObject(VerifyIdCardBatchResponse answer) {
    JsonObject line = new JsonObject();
    line.addProperty("item_id", answer.getItemId());
    if (answer.hasError()) {
      line.add("error", statusObject(answer.getError()));
      return line;
    }
    VerifyIdCardResponse result = answer.getResult();
    line.addProperty("verdict", result.getVerdict().name());
    line.addProperty("similarity", result.getSimilarity());
    line.addProperty("result_code", result.getResultCode());
    line.addProperty("request_id", result.getRequestId());
    return line;
  }

  private static void showProgress(int done, int total) {
    int width = 30;
    int filled = width * done / total;
    System.err.print("\r[" + "#".repeat(filled) + ".".repeat(width - filled) + "] " + done + "/" + total);
    System.err.flush();
  }

  private static String newTraceparent() {
    byte[] ids = new byte[24];
    new SecureRandom().nextBytes(ids);
    HexFormat hex = HexFormat.of();
    return "00-" + hex.formatHex(ids, 0, 16) + "-" + hex.formatHex(ids, 16, 24) + "-01";
  }

  /**
   * Sends the images one at a time as flow control lets them go, and collects the answers.
   * gRPC calls these methods from its own threads, one at a time.
   */
  private static final class BatchCall
      implements ClientResponseObserver<VerifyIdCardBatchRequest, VerifyIdCardBatchResponse> {
    private final List<Path> paths;
    private final List<String> checks;
    private final Set<String> answered = new HashSet<>();
    private final CountDownLatch done = new CountDownLatch(1);
    private int next;
    private boolean halfClosed;
    private volatile Throwable failure;

    BatchCall(List<Path> paths, List<String> checks) {
      this.paths = paths;
      this.checks = checks;
    }

    @Override
    public void beforeStart(ClientCallStreamObserver<VerifyIdCardBatchRequest> requests) {
      requests.setOnReadyHandler(
          () -> {
            while (requests.isReady() && next < paths.size()) {
              Path path = paths.get(next++);
              try {
                requests.onNext(
                    VerifyIdCardBatchRequest.newBuilder()
                        .setItemId(path.getFileName().toString())
                        .setRequest(buildRequest(path.toString(), checks))
                        .build());
              } catch (IOException e) {
                System.err.println("\nfaceid-verify: cannot read " + path + ": " + e);
              }
            }
            if (next == paths.size() && !halfClosed) {
              halfClosed = true;
              requests.onCompleted();
            }
          });
    }

    @Override
    public void onNext(VerifyIdCardBatchResponse answer) {
      synchronized (answered) {
        answered.add(answer.getItemId());
        OUT.println(COMPACT.toJson(answerObject(answer)));
        showProgress(answered.size(), paths.size());
      }
    }

    @Override
    public void onError(Throwable t) {
      failure = t;
      done.countDown();
    }

    @Override
    public void onCompleted() {
      done.countDown();
    }
  }

  private static int verifyBatch(ManagedChannel channel, Options options) throws InterruptedException {
    List<Path> paths;
    try {
      paths = imagesIn(Path.of(options.source));
    } catch (IOException e) {
      System.err.println("faceid-verify: cannot list " + options.source + ": " + e);
      return 2;
    }
    if (paths.isEmpty()) {
      System.err.println("faceid-verify: no PNG or JPEG file in " + options.source);
      return 2;
    }
    String traceparent = options.traceparent != null ? options.traceparent : newTraceparent();
    AtomicReference<Metadata> headers = new AtomicReference<>();
    AtomicReference<Metadata> trailers = new AtomicReference<>();
    IdCardVerificationServiceGrpc.IdCardVerificationServiceStub stub =
        IdCardVerificationServiceGrpc.newStub(channel)
            .withInterceptors(
                MetadataUtils.newAttachHeadersInterceptor(requestHeaders(options, traceparent)),
                MetadataUtils.newCaptureMetadataInterceptor(headers, trailers))
            .withDeadlineAfter(Math.round(options.deadlineSeconds * 1000), TimeUnit.MILLISECONDS);

    showProgress(0, paths.size());
    BatchCall call = new BatchCall(paths, options.checks);
    stub.verifyIdCardBatch(call);
    call.done.await();

    System.err.println();
    System.err.println("traceparent: " + traceparent);
    Metadata counts = trailers.get();
    if (counts == null && call.failure != null) {
      counts = Status.trailersFromThrowable(call.failure);
    }
    for (String name : TRAILER_COUNTS) {
      String value = counts == null ? null : counts.get(key(name));
      System.err.println(name + ": " + (value == null ? "(missing)" : value));
    }
    if (call.failure != null) {
      JsonObject error = rpcErrorObject(call.failure);
      System.err.println(
          "stream ended with " + error.get("code").getAsString() + ": " + error.get("message").getAsString());
    }
    List<String> missing;
    synchronized (call.answered) {
      missing =
          paths.stream()
              .map(p -> p.getFileName().toString())
              .filter(name -> !call.answered.contains(name))
              .toList();
    }
    if (!missing.isEmpty()) {
      System.err.println("no answer for " + missing.size() + " item(s): " + String.join(", ", missing));
    }
    return call.failure != null || !missing.isEmpty() ? 1 : 0;
  }
}
