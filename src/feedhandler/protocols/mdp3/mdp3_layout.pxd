# Cython view of the generated csrc/include/fh/mdp3_layout.h and fh/mdp3_schemas.h
# (tools/gen_mdp3.py writes them from CME's SBE schema XML). Roles are named by the enum members.
from libc.stdint cimport int8_t, int16_t, int64_t, uint8_t, uint16_t

cdef extern from "fh/mdp3_schemas.h" nogil:
    enum:
        FH_MDP3_T_NONE
        FH_MDP3_T_U8
        FH_MDP3_T_I8
        FH_MDP3_T_U16
        FH_MDP3_T_I16
        FH_MDP3_T_U32
        FH_MDP3_T_I32
        FH_MDP3_T_U64
        FH_MDP3_T_I64
        FH_MDP3_T_CHAR
        FH_MDP3_T_CONST
    enum:
        FH_MDP3_K_OTHER
        FH_MDP3_K_HEARTBEAT
        FH_MDP3_K_CHANNEL_RESET
        FH_MDP3_K_BOOK
        FH_MDP3_K_ORDER_BOOK
        FH_MDP3_K_TRADE_SUMMARY
        FH_MDP3_K_VOLUME
        FH_MDP3_K_SESSION_STATS
        FH_MDP3_K_DAILY_STATS
        FH_MDP3_K_LIMITS
        FH_MDP3_K_STATUS
        FH_MDP3_K_DEF_FUTURE
        FH_MDP3_K_DEF_OPTION
        FH_MDP3_K_DEF_SPREAD
        FH_MDP3_K_DEF_OTHER
        FH_MDP3_K_SNAPSHOT
        FH_MDP3_K_SNAPSHOT_ORDER_BOOK
        FH_MDP3_NKINDS
    enum:
        FH_MDP3_GROUP_OTHER
        FH_MDP3_GROUP_ENTRIES
        FH_MDP3_GROUP_ORDERS
    enum:
        FH_MDP3_R_TransactTime
        FH_MDP3_R_MatchEventIndicator
        FH_MDP3_R_SecurityID
        FH_MDP3_R_RptSeq
        FH_MDP3_R_LastMsgSeqNumProcessed
        FH_MDP3_R_TotNumReports
        FH_MDP3_R_TradeDate
        FH_MDP3_R_MDSecurityTradingStatus
        FH_MDP3_R_HighLimitPrice
        FH_MDP3_R_LowLimitPrice
        FH_MDP3_R_MaxPriceVariation
        FH_MDP3_R_NoChunks
        FH_MDP3_R_CurrentChunk
        FH_MDP3_R_SecurityGroup
        FH_MDP3_R_Asset
        FH_MDP3_R_SecurityTradingStatus
        FH_MDP3_R_HaltReason
        FH_MDP3_R_SecurityTradingEvent
        FH_MDP3_R_SecurityUpdateAction
        FH_MDP3_R_LastUpdateTime
        FH_MDP3_R_Symbol
        FH_MDP3_R_MinPriceIncrement
        FH_MDP3_R_DisplayFactor
        FH_MDP3_R_StrikePrice
        FH_MDP3_R_PutOrCall
        FH_MDP3_R_MarketSegmentID
        FH_MDP3_NROOT
    enum:
        FH_MDP3_G_MDEntryPx
        FH_MDP3_G_MDEntrySize
        FH_MDP3_G_SecurityID
        FH_MDP3_G_RptSeq
        FH_MDP3_G_NumberOfOrders
        FH_MDP3_G_MDPriceLevel
        FH_MDP3_G_MDUpdateAction
        FH_MDP3_G_MDEntryType
        FH_MDP3_G_AggressorSide
        FH_MDP3_G_MDTradeEntryID
        FH_MDP3_G_OrderID
        FH_MDP3_G_MDOrderPriority
        FH_MDP3_G_MDDisplayQty
        FH_MDP3_G_ReferenceID
        FH_MDP3_G_OrderUpdateAction
        FH_MDP3_G_LastQty
        FH_MDP3_G_OpenCloseSettlFlag
        FH_MDP3_G_SettlPriceType
        FH_MDP3_G_TradingReferenceDate
        FH_MDP3_G_HighLimitPrice
        FH_MDP3_G_LowLimitPrice
        FH_MDP3_G_MaxPriceVariation
        FH_MDP3_G_ApplID
        FH_MDP3_NGROUP
    enum:
        FH_MDP3_MAX_GROUPS
        FH_MDP3_MAX_TEMPLATE_ID
        FH_MDP3_NSCHEMAS

    ctypedef struct fh_mdp3_field:
        int64_t null_or_const
        int16_t offset
        uint8_t type
        uint8_t optional
        int8_t exponent
        uint8_t length

    ctypedef struct fh_mdp3_group:
        uint16_t block_length
        uint8_t dim_size
        uint8_t num_offset
        uint8_t num_size
        uint8_t role
        uint8_t since_version

    ctypedef struct fh_mdp3_template:
        const char *name
        uint16_t id
        uint16_t block_length
        uint8_t kind
        uint8_t ngroups
        uint8_t since_version
        fh_mdp3_group groups[1]
        fh_mdp3_field root[1]
        fh_mdp3_field entry[1]
        fh_mdp3_field order[1]

    ctypedef struct fh_mdp3_schema:
        uint16_t schema_id
        uint16_t version
        const fh_mdp3_template *const *by_id

    const fh_mdp3_schema fh_mdp3_schemas[]
