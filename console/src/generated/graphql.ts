/** Internal type. DO NOT USE DIRECTLY. */
type Exact<T extends { [key: string]: unknown }> = { [K in keyof T]: T[K] };
/** Internal type. DO NOT USE DIRECTLY. */
export type Incremental<T> = T | { [P in keyof T]?: P extends ' $fragmentName' | '__typename' ? T[P] : never };
/** How an A/B test of 2 to 5 variants runs. */
export type AbTestInput = {
  /** What decides: unique opens or unique clicks per recipient. */
  metric: AbTestMetric;
  /** The fraction of the audience that tests the variants (split evenly among them): more than 0, at most 1. The rest gets the winner. */
  testShare: number;
  /** How long after the test is sent the winner is chosen automatically (60 to 2592000). */
  waitSeconds: number;
};

/** What decides an A/B test: unique OPENS or unique CLICKS per recipient of each variant. */
export type AbTestMetric =
  | 'CLICKS'
  | 'OPENS';

export type CampaignIdInput = {
  id: string;
};

export type CampaignStatus =
  | 'CANCELLED'
  | 'DRAFT'
  | 'FAILED'
  | 'FINISHED'
  | 'PAUSED'
  | 'RUNNING'
  | 'SCHEDULED';

/** One variant of an A/B test: what it changes. An omitted field keeps the campaign's; give either templateId or body with its format for content of its own (its text part is then derived from its HTML). */
export type CampaignVariantInput = {
  body?: string | null | undefined;
  format?: ContentFormat | null | undefined;
  fromName?: string | null | undefined;
  /** A Jinja template, like the campaign's. */
  subject?: string | null | undefined;
  templateId?: string | null | undefined;
};

export type ContentFormat =
  | 'HTML'
  | 'MJML';

/** Give either templateId or body with its format. */
export type CreateCampaignInput = {
  abTest?: AbTestInput | null | undefined;
  /** Default false. List the campaign in its workspace's public archive (/archive/<slug>) once sent, rendered with archiveData and without tracking. */
  archive?: boolean | null | undefined;
  /** The placeholder subscriber the archived copy is rendered for: {name, email, attributes}; by default name "Subscriber", email subscriber@example.com, no attributes. Never a real subscriber's data. */
  archiveData?: unknown;
  body?: string | null | undefined;
  format?: ContentFormat | null | undefined;
  fromEmail: string;
  fromName?: string | null | undefined;
  listIds?: Array<string> | null | undefined;
  name: string;
  plainText?: string | null | undefined;
  replyTo?: string | null | undefined;
  /** Resolved when the campaign starts; a campaign needs a list or a segment. */
  segmentIds?: Array<string> | null | undefined;
  /** The sender it goes through (a Sender id; "" or defaultSender's id: none of its own). */
  senderId?: string | null | undefined;
  /** A Jinja template, rendered per recipient. */
  subject: string;
  templateId?: string | null | undefined;
  /** Default true. */
  trackClicks?: boolean | null | undefined;
  /** Default true. */
  trackOpens?: boolean | null | undefined;
  /** An A/B test's 2 to 5 variants (with abTest). */
  variants?: Array<CampaignVariantInput> | null | undefined;
  /** Default false. Put a small "View in browser" line at the top of each message, linking to the web view (also available to templates as {{ webview_url }}). */
  webViewLink?: boolean | null | undefined;
};

export type CreateListInput = {
  /** The IANA timezone (e.g. Europe/Paris) of its subscribers who have no valid timezone attribute; default: EMAILKIT_DEFAULT_TIMEZONE. An unknown name is INVALID_TIMEZONE. */
  defaultTimezone?: string | null | undefined;
  description?: string | null | undefined;
  name: string;
  optin?: OptIn | null | undefined;
  /** A TRANSACTIONAL template for the double opt-in mail (default: built-in). */
  optinTemplateId?: string | null | undefined;
  /** The sender of its campaigns that name none; default: the default sender. */
  senderId?: string | null | undefined;
  tags?: Array<string> | null | undefined;
  visibility?: Visibility | null | undefined;
};

export type DeliveryStatus =
  | 'FAILED'
  | 'IN_DOUBT'
  | 'QUEUED'
  | 'SENDING'
  | 'SENT'
  | 'SKIPPED';

/** UPSERT adds new addresses and updates existing subscribers (non-empty name, attributes merged, the file winning); SKIP_EXISTING adds new addresses and leaves existing subscribers and their subscriptions untouched. */
export type ImportMode =
  | 'SKIP_EXISTING'
  | 'UPSERT';

export type ImportStatus =
  | 'FAILED'
  | 'FINISHED'
  | 'QUEUED'
  | 'RUNNING';

export type ImportSubscribersInput = {
  /** Header -> target: "email", "name", "-" (ignore) or an attribute path such as "city" or "address.city". Unmapped columns: email/e-mail and name/full name by header, every other column an attribute named by its header (dots nest). Numbers and true/false are typed; empty cells are left out. */
  columnMap?: unknown;
  /** The CSV as text (small files). */
  csv?: string | null | undefined;
  /** The CSV as a multipart upload (give exactly one of csv and file). */
  file?: File | null | undefined;
  /** Lists to subscribe the imported subscribers to. */
  listIds?: Array<string> | null | undefined;
  mode?: ImportMode;
  /** Status of new subscriptions; default UNCONFIRMED on DOUBLE opt-in lists, else CONFIRMED. With UPSERT an explicit CONFIRMED also confirms UNCONFIRMED subscriptions and UNSUBSCRIBED records opt-outs; an import never re-subscribes anyone who unsubscribed. */
  subscriptionStatus?: SubscriptionStatus | null | undefined;
  /** Whether the people it subscribes enter the lists' SUBSCRIBED flows (false: a quiet migration). */
  triggerFlows?: boolean;
};

export type OptIn =
  | 'DOUBLE'
  | 'SINGLE';

export type RetryFailedDeliveriesInput = {
  campaignId: string;
  /** Queue the IN_DOUBT deliveries too. Some of them did reach their recipient, who then gets the message twice. */
  includeInDoubt?: boolean;
};

export type Role =
  | 'ADMIN'
  | 'EDITOR'
  | 'OWNER'
  | 'VIEWER';

export type SubscriptionStatus =
  | 'CONFIRMED'
  | 'UNCONFIRMED'
  | 'UNSUBSCRIBED';

/** Stable codes for userErrors. */
export type UserErrorCode =
  | 'ALREADY_SUPPRESSED'
  | 'CAMPAIGN_NOT_FOUND'
  | 'CONCURRENT_CHANGE'
  | 'CYCLE_WITHOUT_WAIT'
  | 'DESTINATION_REFUSED'
  | 'DOMAIN_NOT_VERIFIED'
  | 'DUPLICATE_DOMAIN'
  | 'DUPLICATE_EMAIL'
  | 'DUPLICATE_NAME'
  | 'DUPLICATE_SLUG'
  | 'DUPLICATE_STEP_KEY'
  | 'DUPLICATE_VARIANT'
  | 'ERASED'
  | 'FLOW_NOT_FOUND'
  | 'FORBIDDEN'
  | 'INVALID_DOMAIN'
  | 'INVALID_EMAIL'
  | 'INVALID_EVENT_NAME'
  | 'INVALID_FILTER'
  | 'INVALID_ID'
  | 'INVALID_INPUT'
  | 'INVALID_SENDER_CREDENTIALS'
  | 'INVALID_SENDER_SETTINGS'
  | 'INVALID_SENDER_TYPE'
  | 'INVALID_SLUG'
  | 'INVALID_STATE'
  | 'INVALID_TEXT'
  | 'INVALID_TIMEZONE'
  | 'INVALID_URL'
  | 'IN_USE'
  | 'LIST_NOT_FOUND'
  | 'MJML_INVALID'
  | 'NOT_FOUND'
  | 'NO_AB_TEST'
  | 'OUT_OF_RANGE'
  | 'QUEUE_UNAVAILABLE'
  | 'QUOTA_EXCEEDED'
  | 'REQUIRED'
  | 'SEGMENT_NOT_FOUND'
  | 'SENDING_DOMAIN_NOT_FOUND'
  | 'SEND_FAILED'
  | 'SUBSCRIBER_NOT_FOUND'
  | 'SUPPRESSED'
  | 'SUPPRESSION_NOT_FOUND'
  | 'TEMPLATE_LIMIT'
  | 'TEMPLATE_NOT_FOUND'
  | 'TEMPLATE_RENDER'
  | 'TEMPLATE_SECURITY'
  | 'TEMPLATE_SYNTAX'
  | 'TOO_LONG'
  | 'TOO_MANY_EVENTS'
  | 'UNKNOWN_EVENT'
  | 'UNKNOWN_STEP'
  | 'VARIANT_COUNT'
  | 'VARIANT_NOT_FOUND'
  | 'WINNER_ALREADY_CHOSEN'
  | 'WORKSPACE_NOT_FOUND'
  | 'WORKSPACE_REQUIRED';

export type Visibility =
  | 'PRIVATE'
  | 'PUBLIC';

export type ViewerQueryVariables = Exact<{ [key: string]: never; }>;


export type ViewerQuery = { viewer: { name: string, role: Role } };

export type CampaignsQueryVariables = Exact<{ [key: string]: never; }>;


export type CampaignsQuery = { campaigns: { totalCount: number, edges: Array<{ node: { id: string, name: string, subject: string, status: CampaignStatus, progress: { status: CampaignStatus, recipients: number, sent: number, failed: number, skipped: number, inDoubt: number } } }> } };

export type CampaignQueryVariables = Exact<{
  id: string;
}>;


export type CampaignQuery = { campaign: { id: string, name: string, subject: string, status: CampaignStatus, statusReason: string | null, fromEmail: string, fromName: string, createdAt: string, startedAt: string | null, finishedAt: string | null, lists: Array<{ id: string, name: string }>, progress: { status: CampaignStatus, statusReason: string | null, recipients: number, sent: number, failed: number, skipped: number, inDoubt: number, ratePerSecond: number, etaSeconds: number | null }, stats: { campaignId: string, recipients: number, sent: number, delivered: number, bounced: number, complained: number, opens: number, uniqueOpens: number, clicks: number, uniqueClicks: number, unsubscribed: number, openRate: number, clickRate: number, bounceRate: number, complaintRate: number }, timeline: Array<{ start: string, delivered: number, opens: number, clicks: number }>, links: Array<{ url: string, clicks: number, uniqueClicks: number }>, deliveries: { totalCount: number, edges: Array<{ node: { id: string, email: string, status: DeliveryStatus, skipReason: string | null, lastError: string | null, attempts: number, sentAt: string | null } }> } } | null };

export type ListsQueryVariables = Exact<{ [key: string]: never; }>;


export type ListsQuery = { lists: { edges: Array<{ node: { id: string, name: string } }> } };

export type CreateListMutationVariables = Exact<{
  input: CreateListInput;
}>;


export type CreateListMutation = { createList: { list: { id: string, name: string } | null, userErrors: Array<{ field: string | null, message: string, code: UserErrorCode }> } };

export type CreateCampaignMutationVariables = Exact<{
  input: CreateCampaignInput;
}>;


export type CreateCampaignMutation = { createCampaign: { campaign: { id: string, name: string } | null, userErrors: Array<{ field: string | null, message: string, code: UserErrorCode }> } };

export type StartCampaignMutationVariables = Exact<{
  input: CampaignIdInput;
}>;


export type StartCampaignMutation = { startCampaign: { campaign: { id: string, status: CampaignStatus } | null, userErrors: Array<{ field: string | null, message: string, code: UserErrorCode }>, warnings: Array<{ code: UserErrorCode, message: string }> } };

export type PauseCampaignMutationVariables = Exact<{
  input: CampaignIdInput;
}>;


export type PauseCampaignMutation = { pauseCampaign: { campaign: { id: string, status: CampaignStatus } | null, userErrors: Array<{ field: string | null, message: string, code: UserErrorCode }>, warnings: Array<{ code: UserErrorCode, message: string }> } };

export type ResumeCampaignMutationVariables = Exact<{
  input: CampaignIdInput;
}>;


export type ResumeCampaignMutation = { resumeCampaign: { campaign: { id: string, status: CampaignStatus } | null, userErrors: Array<{ field: string | null, message: string, code: UserErrorCode }>, warnings: Array<{ code: UserErrorCode, message: string }> } };

export type CancelCampaignMutationVariables = Exact<{
  input: CampaignIdInput;
}>;


export type CancelCampaignMutation = { cancelCampaign: { campaign: { id: string, status: CampaignStatus } | null, userErrors: Array<{ field: string | null, message: string, code: UserErrorCode }>, warnings: Array<{ code: UserErrorCode, message: string }> } };

export type RetryFailedMutationVariables = Exact<{
  input: RetryFailedDeliveriesInput;
}>;


export type RetryFailedMutation = { retryFailedDeliveries: { retried: number, userErrors: Array<{ field: string | null, message: string, code: UserErrorCode }>, warnings: Array<{ code: UserErrorCode, message: string }> } };

export type CampaignProgressLiveSubscriptionVariables = Exact<{
  id: string;
}>;


export type CampaignProgressLiveSubscription = { campaignProgress: { status: CampaignStatus, statusReason: string | null, recipients: number, sent: number, failed: number, skipped: number, inDoubt: number, ratePerSecond: number, etaSeconds: number | null } };

export type CampaignStatsLiveSubscriptionVariables = Exact<{
  id: string;
}>;


export type CampaignStatsLiveSubscription = { campaignStats: { campaignId: string, recipients: number, sent: number, delivered: number, bounced: number, complained: number, opens: number, uniqueOpens: number, clicks: number, uniqueClicks: number, unsubscribed: number, openRate: number, clickRate: number, bounceRate: number, complaintRate: number } };

export type ImportSubscribersMutationVariables = Exact<{
  input: ImportSubscribersInput;
}>;


export type ImportSubscribersMutation = { importSubscribers: { import: { id: string, status: ImportStatus, total: number, processed: number } | null, userErrors: Array<{ field: string | null, message: string, code: UserErrorCode }> } };

export type ImportDetailQueryVariables = Exact<{
  id: string;
}>;


export type ImportDetailQuery = { import: { id: string, status: ImportStatus, sourceName: string, total: number, processed: number, inserted: number, updated: number, skipped: number, failed: number, error: string | null, errors: { totalCount: number, edges: Array<{ node: { row: number, message: string } }> } } | null };

export type ImportProgressLiveSubscriptionVariables = Exact<{
  id: string;
}>;


export type ImportProgressLiveSubscription = { importProgress: { status: ImportStatus, total: number, processed: number, inserted: number, updated: number, skipped: number, failed: number, error: string | null } };
