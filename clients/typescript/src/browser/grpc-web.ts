// One unary gRPC-Web call over fetch (binary format, as tonic-web serves it), failing
// with a ConnectError that carries the status details, so RetryInfo is honoured.
import { Code, ConnectError } from "@connectrpc/connect";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";

function frame(message: Uint8Array): Uint8Array<ArrayBuffer> {
  const framed = new Uint8Array(5 + message.length);
  new DataView(framed.buffer).setUint32(1, message.length);
  framed.set(message, 5);
  return framed;
}

function base64Bytes(text: string): Uint8Array {
  const binary = atob(text.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(text.length / 4) * 4, "="));
  return Uint8Array.from(binary, (char) => char.charCodeAt(0));
}

/** google.rpc.Status { int32 code = 1; string message = 2; repeated google.protobuf.Any details = 3; } */
function statusDetails(encoded: string): { type: string; value: Uint8Array }[] {
  const details: { type: string; value: Uint8Array }[] = [];
  const reader = new BinaryReader(base64Bytes(encoded));
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    if (field !== 3 || wireType !== WireType.LengthDelimited) {
      reader.skip(wireType);
      continue;
    }
    const any = new BinaryReader(reader.bytes());
    let type = "";
    let value: Uint8Array = new Uint8Array(0);
    while (any.pos < any.len) {
      const [anyField, anyType] = any.tag();
      if (anyField === 1) type = any.string().replace(/^.*\//, "");
      else if (anyField === 2) value = any.bytes();
      else any.skip(anyType);
    }
    details.push({ type, value });
  }
  return details;
}

function httpCode(status: number): Code {
  if (status === 401) return Code.Unauthenticated;
  if (status === 403) return Code.PermissionDenied;
  if (status === 404) return Code.Unimplemented;
  if (status === 429 || status === 502 || status === 503 || status === 504) return Code.Unavailable;
  return Code.Unknown;
}

/** Parses "key: value\r\n" trailer lines into `into`. */
function readTrailers(bytes: Uint8Array, into: Headers): void {
  for (const line of new TextDecoder().decode(bytes).split("\r\n")) {
    const colon = line.indexOf(":");
    if (colon > 0) into.set(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
  }
}

/** Calls `method` (`/package.Service/Method`) and returns the response message's bytes. */
export async function grpcWebUnary(
  baseUrl: string,
  method: string,
  headers: Record<string, string>,
  message: Uint8Array,
  signal: AbortSignal,
): Promise<Uint8Array> {
  let response: Response;
  let body: Uint8Array;
  try {
    response = await fetch(`${baseUrl}${method}`, {
      method: "POST",
      headers: { ...headers, "content-type": "application/grpc-web+proto", "x-grpc-web": "1" },
      body: frame(message),
      signal,
    });
    body = new Uint8Array(await response.arrayBuffer());
  } catch (error) {
    throw new ConnectError(`network error: ${String(error)}`, Code.Unavailable, undefined, undefined, error);
  }
  const trailers = new Headers();
  let data: Uint8Array | undefined;
  for (let offset = 0; offset + 5 <= body.length; ) {
    const length = new DataView(body.buffer, body.byteOffset + offset + 1, 4).getUint32(0);
    const payload = body.subarray(offset + 5, offset + 5 + length);
    if (body[offset]! & 0x80) readTrailers(payload, trailers);
    else data = payload;
    offset += 5 + length;
  }
  const status = trailers.get("grpc-status") ?? response.headers.get("grpc-status");
  if (status === null) {
    throw new ConnectError(`HTTP ${response.status} without a gRPC status`, response.ok ? Code.Unknown : httpCode(response.status));
  }
  if (status !== "0") {
    const source = trailers.has("grpc-status") ? trailers : response.headers;
    const error = new ConnectError(decodeURIComponent(source.get("grpc-message") ?? ""), Number(status) as Code);
    const details = source.get("grpc-status-details-bin");
    if (details) error.details.push(...statusDetails(details));
    throw error;
  }
  if (data === undefined) throw new ConnectError("response without a message", Code.Internal);
  return data;
}
