// Package remote is a backend that runs batches on a remote server speaking
// the KServe Open Inference Protocol v2 over REST: Triton, KServe,
// MLServer, OpenVINO Model Server.
//
// A model's path is its upstream URL, such as
// http://triton:8000/v2/models/resnet or
// https://host/prefix/v2/models/resnet/versions/3. Runtime.Open reads the
// model metadata (GET on that URL) for the session's inputs and outputs;
// Session.Run posts each batch as one infer request (POST on URL/infer)
// and returns its outputs. infergate's scheduler forms the batches, so
// one Run is one batch and one upstream call; what the upstream does with
// it (its own batching, instances) is its business. [Dispatch] serves
// http:// and https:// paths with a remote runtime and every other path
// with a local one.
//
// # Wire format
//
// Requests and responses use the codec of package kserve. By default
// ([EncodingAuto]) inputs travel as binary tensor data (the body is the
// JSON header, its length in the Inference-Header-Content-Length header,
// then the raw tensors) and binary outputs are asked for with the
// binary_data_output request parameter. An upstream that does not
// implement the binary extension (MLServer, for one) fails such a request;
// until a binary request has succeeded, a session answered with an HTTP
// error that may be such a refusal (not 401, 403, 404 or a retryable one)
// resends the batch as JSON, and if that succeeds it uses JSON from then
// on (logged once). Once binary has worked it is never
// given up, so bad input costs one call. [EncodingBinary] and
// [EncodingJSON] fix the choice. Responses are decoded as they come,
// binary or JSON.
//
// # Errors
//
// Run returns *infergate.Error:
//
//	upstream answer                             code          retried
//	429, 502, 503; connection refused, reset,   EUnavailable  yes, up to Attempts
//	  closed or any other transport failure                   (backoff with jitter)
//	404 (model not loaded upstream)             EUnavailable  no
//	401, 403 (infergate's credentials)          EInternal     no
//	other 4xx (the upstream refuses the input)  EUnprocess    no
//	500 and other 5xx                           EInternal     no
//	200 with a malformed body, a missing or     EInternal     no
//	  mistyped output, a wrong batch size
//	Options.Timeout or the ctx deadline passed  EDeadline     no
//	ctx canceled                                ECanceled     no
//
// The message carries the upstream's own message (its v2 {"error": ...}
// body, or the start of a non-JSON body) but never the upstream URL, which
// the wrapped cause names (with any password redacted) for the logs.
//
// # Retries and timeouts
//
// Each Run is bounded by Options.Timeout, retries included, and by its
// ctx. A retry waits Backoff, doubled per retry up to MaxBackoff, with
// equal jitter (between half and all of it), or the upstream's
// Retry-After when that is longer; a wait that would end after the
// deadline is not started and Run fails with EUnavailable at once.
// Inference is idempotent, so a call whose connection broke mid-way is
// safe to resend.
package remote
