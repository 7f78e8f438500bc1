// The console talks to emailkit exactly as a customer's frontend would: POST /graphql with a bearer key, and
// graphql-ws on the same path for live updates.
import { createClient, type Client } from "graphql-ws";

const STORAGE_KEY = "emailkit.apiKey"; // the same entry GraphiQL's page keeps the key in

export function loadKey(): string {
  try {
    return window.localStorage.getItem(STORAGE_KEY) ?? "";
  } catch {
    return "";
  }
}

export function saveKey(key: string): void {
  try {
    if (key) window.localStorage.setItem(STORAGE_KEY, key);
    else window.localStorage.removeItem(STORAGE_KEY);
  } catch {
    // Storage can be off (privacy modes): the key then lasts for this visit only.
  }
}

export type Failure = "down" | "unauthorized" | "forbidden" | "graphql";

export class ApiError extends Error {
  constructor(
    readonly failure: Failure,
    message: string,
  ) {
    super(message);
  }
}

export interface UserError {
  field: string | null;
  message: string;
  code: string;
}

const endpoint = new URL("graphql", window.location.href.replace(/[#?].*$/, "").replace(/[^/]*$/, ""));

export async function request<TData, TVars = Record<string, never>>(
  key: string,
  query: string,
  variables?: TVars,
): Promise<TData> {
  let response: Response;
  try {
    response = await fetch(endpoint, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${key}` },
      body: JSON.stringify({ query, variables: variables ?? {} }),
    });
  } catch {
    throw new ApiError("down", "emailkit's API cannot be reached.");
  }
  return readResult<TData>(response);
}

/** A mutation with one file, sent as a GraphQL multipart request (the file goes to `variables.input.file`). */
export async function upload<TData, TVars>(key: string, query: string, variables: TVars, file: File): Promise<TData> {
  const form = new FormData();
  form.append("operations", JSON.stringify({ query, variables }));
  form.append("map", JSON.stringify({ "0": ["variables.input.file"] }));
  form.append("0", file, file.name);
  let response: Response;
  try {
    response = await fetch(endpoint, {
      method: "POST",
      // The upload route wants proof that this is no cross-site form post.
      headers: { Authorization: `Bearer ${key}`, "GraphQL-Require-Preflight": "1" },
      body: form,
    });
  } catch {
    throw new ApiError("down", "emailkit's API cannot be reached.");
  }
  return readResult<TData>(response);
}

async function readResult<TData>(response: Response): Promise<TData> {
  if (response.status === 401) throw new ApiError("unauthorized", "The API key was refused (unknown or revoked).");
  if (response.status === 403) throw new ApiError("forbidden", "This API key may not do that.");
  let body: { data?: TData | null; errors?: { message: string }[] };
  try {
    body = (await response.json()) as typeof body;
  } catch {
    throw new ApiError("down", `emailkit's API answered ${response.status} without a GraphQL result.`);
  }
  if (body.errors?.length) throw new ApiError("graphql", body.errors.map((e) => e.message).join("; "));
  if (body.data == null) throw new ApiError("down", `emailkit's API answered ${response.status} with no data.`);
  return body.data;
}

let socket: Client | null = null;
let socketKey = "";

export type SocketTrouble = (failure: Failure, message: string) => void;

/** One graphql-ws connection per key, shared by every live view. */
export function live(key: string, onTrouble: SocketTrouble): Client {
  if (socket && socketKey === key) return socket;
  socket?.dispose();
  socketKey = key;
  const url = new URL(endpoint);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  socket = createClient({
    url: url.href,
    connectionParams: { Authorization: `Bearer ${key}` },
    retryAttempts: 5,
    shouldRetry: (event) => !(isClose(event) && (event.code === 4403 || event.code === 4401)),
    on: {
      closed: (event) => {
        if (isClose(event) && (event.code === 4403 || event.code === 4401)) {
          onTrouble("unauthorized", "The API key was revoked: live updates stopped.");
        }
      },
    },
  });
  return socket;
}

export function closeLive(): void {
  socket?.dispose();
  socket = null;
  socketKey = "";
}

function isClose(event: unknown): event is CloseEvent {
  return typeof event === "object" && event !== null && "code" in event;
}

/** Subscribe; returns the function that stops it. */
export function subscribe<TData, TVars>(
  client: Client,
  query: string,
  variables: TVars,
  onData: (data: TData) => void,
  onError: (message: string) => void,
): () => void {
  return client.subscribe<TData>(
    { query, variables: variables as Record<string, unknown> },
    {
      next: (result) => {
        if (result.errors?.length) onError(result.errors.map((e) => e.message).join("; "));
        else if (result.data) onData(result.data as TData);
      },
      error: (err) => {
        onError(isClose(err) ? `Live updates closed (${err.code}${err.reason ? `: ${err.reason}` : ""}).` : String(err));
      },
      complete: () => undefined,
    },
  );
}
