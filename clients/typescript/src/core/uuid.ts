/** Fills a byte array with cryptographically strong random values. */
export type RandomFill = (bytes: Uint8Array) => void;

const HEX: string[] = Array.from({ length: 256 }, (_, byte) => byte.toString(16).padStart(2, "0"));

/**
 * Returns a UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, then random bits, so ids
 * sort by creation time and every resend of an event carries the same id.
 */
export function uuidv7(fillRandom: RandomFill, nowMs: number = Date.now()): string {
  const bytes = new Uint8Array(16);
  fillRandom(bytes);
  let millis = nowMs;
  for (let index = 5; index >= 0; index--) {
    bytes[index] = millis % 256;
    millis = Math.floor(millis / 256);
  }
  bytes[6] = 0x70 | (bytes[6]! & 0x0f);
  bytes[8] = 0x80 | (bytes[8]! & 0x3f);
  let text = "";
  for (let index = 0; index < 16; index++) {
    if (index === 4 || index === 6 || index === 8 || index === 10) text += "-";
    text += HEX[bytes[index]!];
  }
  return text;
}
