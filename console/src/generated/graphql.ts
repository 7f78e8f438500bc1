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

/** A condition on a subscriber attribute, e.g. path "address.city". */
export type AttributeFilter = {
  op: FilterOp;
  /** Keys separated by dots. */
  path: string;
  /** A string, number, boolean or null; a list for IN; true/false (or omitted) for EXISTS. */
  value?: unknown;
};

/** HARD: permanent failure; SOFT: temporary. */
export type BounceType =
  | 'HARD'
  | 'SOFT';

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

/** How exact a `totalCount` is. EXACT: the number of matches. ESTIMATE: there are more matches than the server counts exactly (EMAILKIT_EXACT_COUNT_LIMIT, 10,000 by default) and the number is PostgreSQL's query-planner estimate from table statistics: within a few per cent for all subscribers, a list or a status, about 10% for a search, up to a factor of two for an attribute filter; show it as "≈98,000" (or as "10,000+" where a rough figure would mislead). AT_LEAST: there are more matches than the number, which is that limit (on SQLite, and for nested connections such as a campaign's deliveries): show it as "10,000+". */
export type CountPrecision =
  | 'AT_LEAST'
  | 'ESTIMATE'
  | 'EXACT';

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

export type CreateSegmentInput = {
  description?: string | null | undefined;
  filter: SubscriberFilterInput;
  name: string;
};

export type CreateTemplateInput = {
  body: string;
  format: ContentFormat;
  kind: TemplateKind;
  name: string;
  /** Required for TRANSACTIONAL templates; campaigns bring their own. */
  subject?: string | null | undefined;
};

/** Strictly before / strictly after; give one or both (with a timezone offset). */
export type DateTimeFilter = {
  after?: string | null | undefined;
  before?: string | null | undefined;
};

export type DeleteSegmentInput = {
  id: string;
};

export type DeliveryStatus =
  | 'FAILED'
  | 'IN_DOUBT'
  | 'QUEUED'
  | 'SENDING'
  | 'SENT'
  | 'SKIPPED';

/** RECEIVED means a SENT delivery. */
export type EngagementEvent =
  | 'CLICKED'
  | 'OPENED'
  | 'RECEIVED';

/** Received / opened / clicked one campaign, or any campaign without campaignId. */
export type EngagementFilter = {
  campaignId?: string | null | undefined;
  event: EngagementEvent;
  /** Only in a flow's conditions (a BRANCH step's): the person OPENED or CLICKED the message of the step with this key, in their own run through the flow. Refused anywhere else. */
  flowStep?: string | null | undefined;
  /** Only the last N days (N >= 1). */
  withinDays?: number | null | undefined;
};

/** What happened to a message; CUSTOM: an event your own systems sent (trackEvent, POST /api/events). */
export type EventType =
  | 'BOUNCE'
  | 'CLICK'
  | 'COMPLAINT'
  | 'CUSTOM'
  | 'DEFERRED'
  | 'DELIVERED'
  | 'DROPPED'
  | 'OPEN'
  | 'UNSUBSCRIBE';

/** EQ / NE / IN compare typed values (5 never equals "5"; NE needs the attribute to be present). GT / GTE / LT / LTE compare numbers with numbers and strings with strings (byte order). CONTAINS is a case-insensitive substring for strings and element membership for arrays. EXISTS takes true (default) or false. */
export type FilterOp =
  | 'CONTAINS'
  | 'EQ'
  | 'EXISTS'
  | 'GT'
  | 'GTE'
  | 'IN'
  | 'LT'
  | 'LTE'
  | 'NE';

export type FlowIdInput = {
  id: string;
};

/** ACTIVE: inside the flow (due now, or waiting until dueAt); COMPLETED: went through to the end; EXITED: left early (see exitReason). */
export type FlowRunStatus =
  | 'ACTIVE'
  | 'COMPLETED'
  | 'EXITED';

/** DRAFT until the first publish; ACTIVE: people enter and go on; PAUSED: nobody enters and nobody goes on (waits keep their due time); ARCHIVED: for good, every run still inside has left. */
export type FlowStatus =
  | 'ACTIVE'
  | 'ARCHIVED'
  | 'DRAFT'
  | 'PAUSED';

/** Moves the runs at step `from` of older versions to step `to` of the new one. */
export type FlowStepMappingInput = {
  from: string;
  to: string;
};

/** SEND a template; WAIT a duration or until a weekday/time window; BRANCH on a condition; UPDATE attributes and lists; WEBHOOK: a signed POST; EXIT the flow. */
export type FlowStepType =
  | 'BRANCH'
  | 'EXIT'
  | 'SEND'
  | 'UPDATE'
  | 'WAIT'
  | 'WEBHOOK';

/** What makes a person enter a flow. */
export type FlowTriggerType =
  | 'DATE_ATTRIBUTE'
  | 'ENGAGED'
  | 'EVENT'
  | 'SEGMENT_ENTERED'
  | 'SUBSCRIBED';

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

/** Membership of a list; without status, any subscription that is not UNSUBSCRIBED. */
export type ListMembershipFilter = {
  listId: string;
  status?: SubscriptionStatus | null | undefined;
};

export type OptIn =
  | 'DOUBLE'
  | 'SINGLE';

/** A saved template (fields given here override it, unsaved) or a body with its format. */
export type PreviewTemplateInput = {
  body?: string | null | undefined;
  format?: ContentFormat | null | undefined;
  subject?: string | null | undefined;
  /** Render with this subscriber's data instead of a sample subscriber. */
  subscriberId?: string | null | undefined;
  templateId?: string | null | undefined;
};

export type PublishFlowInput = {
  id: string;
  /** People already inside stay on their version, except those at a step named here. */
  stepMapping?: Array<FlowStepMappingInput> | null | undefined;
};

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

/** The provider a sender goes through (each type's settings and credentials: see the README, "Senders and domains"). */
export type SenderType =
  | 'BREVO'
  | 'MAILGUN'
  | 'OUTBOX'
  | 'POSTMARK'
  | 'RESEND'
  | 'SENDGRID'
  | 'SES'
  | 'SMTP';

/** Case-insensitive text match; every field given must hold. */
export type StringFilter = {
  contains?: string | null | undefined;
  endsWith?: string | null | undefined;
  eq?: string | null | undefined;
  startsWith?: string | null | undefined;
};

/** A subscriber filter. The fields set on one node are ANDed; `and`, `or` and `not` group nodes. An empty node matches everyone. At most 10 levels and 100 conditions. */
export type SubscriberFilterInput = {
  and?: Array<SubscriberFilterInput> | null | undefined;
  attribute?: AttributeFilter | null | undefined;
  createdAt?: DateTimeFilter | null | undefined;
  email?: StringFilter | null | undefined;
  engagement?: EngagementFilter | null | undefined;
  list?: ListMembershipFilter | null | undefined;
  name?: StringFilter | null | undefined;
  not?: SubscriberFilterInput | null | undefined;
  or?: Array<SubscriberFilterInput> | null | undefined;
  status?: SubscriberStatus | null | undefined;
};

export type SubscriberStatus =
  | 'BLOCKLISTED'
  | 'ENABLED';

export type SubscriptionStatus =
  | 'CONFIRMED'
  | 'UNCONFIRMED'
  | 'UNSUBSCRIBED';

export type TemplateKind =
  | 'CAMPAIGN'
  | 'TRANSACTIONAL';

export type TestSenderInput = {
  /** A sender, or defaultSender's id. */
  id: string;
};

/** Omitted fields keep their value; a new filter replaces the old one. */
export type UpdateSegmentInput = {
  description?: string | null | undefined;
  filter?: SubscriberFilterInput | null | undefined;
  id: string;
  name?: string | null | undefined;
};

export type UpdateTemplateInput = {
  body?: string | null | undefined;
  format?: ContentFormat | null | undefined;
  id: string;
  kind?: TemplateKind | null | undefined;
  name?: string | null | undefined;
  subject?: string | null | undefined;
};

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

export type SubscribersQueryVariables = Exact<{
  first: number;
  after?: string | null | undefined;
  search?: string | null | undefined;
  status?: SubscriberStatus | null | undefined;
  listId?: string | null | undefined;
}>;


export type SubscribersQuery = { subscribers: { totalCount: number, totalCountPrecision: CountPrecision, pageInfo: { hasNextPage: boolean, endCursor: string | null }, edges: Array<{ node: { id: string, email: string, name: string, status: SubscriberStatus, createdAt: string } }> } };

export type SubscriberDetailQueryVariables = Exact<{
  id: string;
}>;


export type SubscriberDetailQuery = { subscriber: { id: string, email: string, name: string, status: SubscriberStatus, attributes: unknown, createdAt: string, updatedAt: string, subscriptions: Array<{ status: SubscriptionStatus, createdAt: string, list: { id: string, name: string } }>, events: { totalCount: number, edges: Array<{ node: { id: string, type: EventType, bounceType: BounceType | null, provider: string, occurredAt: string, url: string | null, reason: string | null, name: string | null, campaign: { id: string, name: string } | null } }> }, flowRuns: { totalCount: number, edges: Array<{ node: { id: string, status: FlowRunStatus, enteredAt: string, finishedAt: string | null, exitReason: string | null, dueAt: string | null, version: number, flow: { id: string, name: string } | null, currentStep: { key: string, type: FlowStepType } | null } }> } } | null };

export type AudienceChoicesQueryVariables = Exact<{ [key: string]: never; }>;


export type AudienceChoicesQuery = { lists: { edges: Array<{ node: { id: string, name: string } }> }, campaigns: { edges: Array<{ node: { id: string, name: string } }> } };

export type SegmentPreviewQueryVariables = Exact<{
  filter: SubscriberFilterInput;
}>;


export type SegmentPreviewQuery = { segmentPreview: { count: number | null, userErrors: Array<{ field: string | null, message: string, code: UserErrorCode }>, sample: Array<{ id: string, email: string, name: string }> } };

export type SegmentsQueryVariables = Exact<{ [key: string]: never; }>;


export type SegmentsQuery = { segments: { edges: Array<{ node: { id: string, name: string, description: string, subscriberCount: number } }> } };

export type SegmentDetailQueryVariables = Exact<{
  id: string;
}>;


export type SegmentDetailQuery = { segment: { id: string, name: string, description: string, filter: unknown } | null };

export type CreateSegmentMutationVariables = Exact<{
  input: CreateSegmentInput;
}>;


export type CreateSegmentMutation = { createSegment: { segment: { id: string, name: string, subscriberCount: number } | null, userErrors: Array<{ field: string | null, message: string, code: UserErrorCode }> } };

export type UpdateSegmentMutationVariables = Exact<{
  input: UpdateSegmentInput;
}>;


export type UpdateSegmentMutation = { updateSegment: { segment: { id: string, name: string, subscriberCount: number } | null, userErrors: Array<{ field: string | null, message: string, code: UserErrorCode }> } };

export type DeleteSegmentMutationVariables = Exact<{
  input: DeleteSegmentInput;
}>;


export type DeleteSegmentMutation = { deleteSegment: { deletedId: string | null, userErrors: Array<{ field: string | null, message: string, code: UserErrorCode }> } };

export type SendersQueryVariables = Exact<{ [key: string]: never; }>;


export type SendersQuery = { defaultSender: { id: string, name: string, type: SenderType, hasCredentials: boolean, ratePerSecond: number | null, isDefault: boolean } | null, senders: { edges: Array<{ node: { id: string, name: string, type: SenderType, hasCredentials: boolean, ratePerSecond: number | null, isDefault: boolean } }> } };

export type SenderDetailQueryVariables = Exact<{
  id: string;
}>;


export type SenderDetailQuery = { sender: { id: string, name: string, type: SenderType, settings: unknown, ratePerSecond: number | null, poolSize: number, hasCredentials: boolean, credentialsLast4: string | null, isDefault: boolean, createdAt: string | null, updatedAt: string | null, warmup: { startPerDay: number, growthPercent: number, ceilingPerDay: number, startsOn: unknown } | null, warmupToday: { allowance: number, sent: number, remaining: number, resetsAt: string } | null } | null };

export type TestSenderMutationVariables = Exact<{
  input: TestSenderInput;
}>;


export type TestSenderMutation = { testSender: { ok: boolean, message: string | null, sender: { id: string, credentialsLast4: string | null, hasCredentials: boolean } | null, userErrors: Array<{ field: string | null, message: string, code: UserErrorCode }> } };

export type CampaignDetailQueryVariables = Exact<{
  id: string;
}>;


export type CampaignDetailQuery = { campaign: { id: string, name: string, subject: string, status: CampaignStatus, statusReason: string | null, fromEmail: string, fromName: string, lists: Array<{ id: string, name: string }>, template: { id: string, name: string } | null, progress: { status: CampaignStatus, statusReason: string | null, recipients: number, sent: number, failed: number, skipped: number, inDoubt: number, ratePerSecond: number, etaSeconds: number | null }, stats: { campaignId: string, recipients: number, sent: number, delivered: number, bounced: number, complained: number, opens: number, uniqueOpens: number, clicks: number, uniqueClicks: number, unsubscribed: number, openRate: number, clickRate: number, bounceRate: number, complaintRate: number }, timeline: Array<{ start: string, delivered: number, opens: number, clicks: number }>, links: Array<{ url: string, clicks: number, uniqueClicks: number }> } | null };

export type CampaignDeliveriesQueryVariables = Exact<{
  id: string;
  first: number;
  after?: string | null | undefined;
  status?: DeliveryStatus | null | undefined;
}>;


export type CampaignDeliveriesQuery = { campaign: { id: string, deliveries: { totalCount: number, totalCountPrecision: CountPrecision, pageInfo: { hasNextPage: boolean, endCursor: string | null }, edges: Array<{ node: { id: string, email: string, status: DeliveryStatus, skipReason: string | null, lastError: string | null, attempts: number, sentAt: string | null } }> } } | null };

export type RetryFailedDeliveriesMutationVariables = Exact<{
  input: RetryFailedDeliveriesInput;
}>;


export type RetryFailedDeliveriesMutation = { retryFailedDeliveries: { retried: number, userErrors: Array<{ field: string | null, message: string, code: UserErrorCode }>, warnings: Array<{ code: UserErrorCode, message: string }> } };

export type TemplatesQueryVariables = Exact<{ [key: string]: never; }>;


export type TemplatesQuery = { templates: { edges: Array<{ node: { id: string, name: string, format: ContentFormat } }> } };

export type NewCampaignChoicesQueryVariables = Exact<{ [key: string]: never; }>;


export type NewCampaignChoicesQuery = { lists: { edges: Array<{ node: { id: string, name: string } }> }, templates: { edges: Array<{ node: { id: string, name: string, format: ContentFormat, subject: string } }> } };

export type TemplateDetailQueryVariables = Exact<{
  id: string;
}>;


export type TemplateDetailQuery = { template: { id: string, name: string, kind: TemplateKind, format: ContentFormat, subject: string, body: string } | null };

export type PreviewTemplateMutationVariables = Exact<{
  input: PreviewTemplateInput;
}>;


export type PreviewTemplateMutation = { previewTemplate: { subject: string | null, html: string | null, userErrors: Array<{ field: string | null, message: string, code: UserErrorCode }> } };

export type CreateTemplateMutationVariables = Exact<{
  input: CreateTemplateInput;
}>;


export type CreateTemplateMutation = { createTemplate: { template: { id: string, name: string } | null, userErrors: Array<{ field: string | null, message: string, code: UserErrorCode }> } };

export type UpdateTemplateMutationVariables = Exact<{
  input: UpdateTemplateInput;
}>;


export type UpdateTemplateMutation = { updateTemplate: { template: { id: string, name: string } | null, userErrors: Array<{ field: string | null, message: string, code: UserErrorCode }> } };

export type CreateCampaignFromMutationVariables = Exact<{
  input: CreateCampaignInput;
}>;


export type CreateCampaignFromMutation = { createCampaign: { campaign: { id: string, name: string } | null, userErrors: Array<{ field: string | null, message: string, code: UserErrorCode }> } };

export type FlowsQueryVariables = Exact<{ [key: string]: never; }>;


export type FlowsQuery = { flows: { totalCount: number, edges: Array<{ node: { id: string, name: string, status: FlowStatus, version: number, stats: { entered: number, active: number, completed: number, exited: number } } }> } };

export type FlowDetailQueryVariables = Exact<{
  id: string;
  runStatus?: FlowRunStatus | null | undefined;
}>;


export type FlowDetailQuery = { flow: { id: string, name: string, status: FlowStatus, version: number, hasUnpublishedChanges: boolean, createdAt: string, updatedAt: string, trigger: { type: FlowTriggerType, eventName: string | null, attribute: string | null, list: { name: string } | null, segment: { name: string } | null }, stats: { entered: number, active: number, completed: number, exited: number }, steps: Array<{ key: string, type: FlowStepType, next: string | null, then: string | null, otherwise: string | null, waitSeconds: number | null, template: { name: string } | null, stats: { entered: number, completed: number, sent: number, skipped: number, failed: number, opened: number, clicked: number } }>, runs: { totalCount: number, totalCountPrecision: CountPrecision, edges: Array<{ node: { id: string, status: FlowRunStatus, enteredAt: string, finishedAt: string | null, exitReason: string | null, dueAt: string | null, subscriber: { email: string } | null, currentStep: { key: string } | null } }> } } | null };

export type FlowStatsLiveSubscriptionVariables = Exact<{
  id: string;
}>;


export type FlowStatsLiveSubscription = { flowStats: { flowId: string, stats: { entered: number, active: number, completed: number, exited: number }, steps: Array<{ key: string, stats: { entered: number, completed: number, sent: number, skipped: number, failed: number, opened: number, clicked: number } }> } };

export type PauseFlowMutationVariables = Exact<{
  input: FlowIdInput;
}>;


export type PauseFlowMutation = { pauseFlow: { flow: { id: string, status: FlowStatus } | null, userErrors: Array<{ field: string | null, message: string, code: UserErrorCode }> } };

export type ResumeFlowMutationVariables = Exact<{
  input: FlowIdInput;
}>;


export type ResumeFlowMutation = { resumeFlow: { flow: { id: string, status: FlowStatus } | null, userErrors: Array<{ field: string | null, message: string, code: UserErrorCode }> } };

export type ArchiveFlowMutationVariables = Exact<{
  input: FlowIdInput;
}>;


export type ArchiveFlowMutation = { archiveFlow: { flow: { id: string, status: FlowStatus } | null, userErrors: Array<{ field: string | null, message: string, code: UserErrorCode }> } };

export type PublishFlowMutationVariables = Exact<{
  input: PublishFlowInput;
}>;


export type PublishFlowMutation = { publishFlow: { flow: { id: string, status: FlowStatus } | null, userErrors: Array<{ field: string | null, message: string, code: UserErrorCode }> } };

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
