// Typings for the part of Nakama's JavaScript runtime (`nkruntime`) this module uses, written by the
// gameye-bridge project from Nakama's documented runtime API. Only what src/main.ts calls is declared,
// so the type check fails if the module starts using something these typings (and the Node test's
// fake) do not describe.

declare namespace nkruntime {
    /** The context of the current execution. `env` is Nakama's `runtime.env` configuration. */
    interface Context {
        env: { [key: string]: string };
        executionMode: string;
        node: string;
        /** Empty for server-to-server calls (http_key); set when a user's session calls. */
        userId: string;
        username: string;
        sessionId: string;
    }

    interface Logger {
        debug(format: string, ...params: any[]): void;
        info(format: string, ...params: any[]): void;
        warn(format: string, ...params: any[]): void;
        error(format: string, ...params: any[]): void;
    }

    interface Presence {
        userId: string;
        sessionId: string;
        username: string;
        node: string;
    }

    /** One matched user, as the JS runtime hands it to the matched hook. */
    interface MatchmakerResult {
        presence: Presence;
        properties: { [key: string]: string | number | boolean };
        partyId?: string;
    }

    type RequestMethod = "get" | "post" | "put" | "patch" | "delete" | "head";

    interface HttpResponse {
        code: number;
        headers: { [key: string]: string | string[] };
        body: string;
    }

    interface NotificationRequest {
        userId: string;
        subject: string;
        content: { [key: string]: any };
        code: number;
        senderId?: string;
        persistent?: boolean;
    }

    interface StorageWriteRequest {
        collection: string;
        key: string;
        /** The system user ("00000000-0000-0000-0000-000000000000") owns server-side records. */
        userId: string;
        value: { [key: string]: any };
        /** "*": write only if no record exists (Nakama refuses otherwise). */
        version?: string;
        permissionRead?: 0 | 1 | 2;
        permissionWrite?: 0 | 1;
    }

    interface StorageWriteAck {
        collection: string;
        key: string;
        userId: string;
        version: string;
    }

    interface Event {
        name: string;
        properties: { [key: string]: string };
        timestamp?: number;
        external?: boolean;
    }

    interface Nakama {
        httpRequest(url: string, method: RequestMethod, headers?: { [header: string]: string }, body?: string, timeout?: number): HttpResponse;
        notificationsSend(notifications: NotificationRequest[]): void;
        storageWrite(objects: StorageWriteRequest[]): StorageWriteAck[];
        /** Older Nakama versions return a binary string, newer ones an ArrayBuffer. */
        hmacSha256Hash(input: string, key: string): ArrayBuffer | string;
        base16Encode(input: ArrayBuffer | string): string;
        uuidv4(): string;
    }

    type MatchmakerMatchedFunction = (ctx: Context, logger: Logger, nk: Nakama, matches: MatchmakerResult[]) => string | void;
    type RpcFunction = (ctx: Context, logger: Logger, nk: Nakama, payload: string) => string | void;
    type EventFunction = (ctx: Context, logger: Logger, nk: Nakama, evt: Event) => void;

    interface Initializer {
        registerMatchmakerMatched(fn: MatchmakerMatchedFunction): void;
        registerRpc(id: string, fn: RpcFunction): void;
        registerEventSessionEnd(fn: EventFunction): void;
    }

    /** An error thrown from an RPC: Nakama answers with the gRPC code mapped to an HTTP status. */
    interface Error {
        message: string;
        code: number;
    }

    type InitModule = (ctx: Context, logger: Logger, nk: Nakama, initializer: Initializer) => void;
}
